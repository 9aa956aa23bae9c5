"""Allocates 100 MB under a 50 MB hard limit: the kernel kills it (oom_killed)."""
block = bytearray(100 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page so the memory is really used
print("allocated 100 MB")
