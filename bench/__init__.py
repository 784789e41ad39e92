"""`make bench`: throughput, scaling and memory of Fieldsync on MariaDB + Redis, each figure a
ratio to a baseline measured in the same run (docs/benchmarks.md). Scripts, not tests."""
