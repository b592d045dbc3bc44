"""The ledger on Redis Cluster (issue 17, `docs/cluster.md`): the cluster-aware client
(`client`, with its per-node `pipelines` and `routing` of commands to slots), slot
arithmetic (`slots`), each master's state for `/healthz` (`health`), and a local N-master
cluster for tests and benchmarks (`server`).
Which keys go to which slot is `notifier.ledger.shards`; that holds on one Redis too."""
