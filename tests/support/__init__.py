"""What the tests and the benchmark share: the server process, the target, nginx, process and memory helpers."""
