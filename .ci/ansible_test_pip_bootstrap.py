"""Stand-in for ansible-test's pip bootstrap script, whose download host is unreachable here.

ansible-test runs the cached bootstrap file with pip's own arguments; we bootstrap pip from
the interpreter's ensurepip and then install what was asked for from the package index.
"""

import subprocess
import sys

subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
