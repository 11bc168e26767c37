"""sift's benchmark suite: ``python -m benchmarks.run [--quick] [--device cpu|cuda] [--out out/bench]``."""
