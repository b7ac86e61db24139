"""Networks (EDVR), their building blocks, and checkpoint I/O."""
