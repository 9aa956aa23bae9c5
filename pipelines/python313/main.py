import platform
import socket
import sys

print("python", platform.python_version(), "at", sys.executable)
assert sys.version_info[:2] == (3, 13), f"expected Python 3.13, got {platform.python_version()}"
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
except OSError as exc:
    print("no network, as configured:", exc.__class__.__name__)
else:
    sys.exit("network: none was not applied")
