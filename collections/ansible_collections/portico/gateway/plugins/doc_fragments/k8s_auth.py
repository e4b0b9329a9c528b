# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by Portico's Kubernetes plugins and modules.
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file. Defaults to the client's usual lookup (C(KUBECONFIG), C(~/.kube/config)).
    type: path
  context:
    description: The kubeconfig context to use; the current context when omitted.
    type: str
  host:
    description: API server URL, instead of a kubeconfig.
    type: str
  api_key:
    description: Bearer token, with O(host).
    type: str
  validate_certs:
    description: Verify the API server's TLS certificate, with O(host).
    type: bool
    default: true
  ca_cert:
    description: CA bundle for the API server's certificate, with O(host).
    type: path
requirements:
  - kubernetes (the official Python client)
"""
