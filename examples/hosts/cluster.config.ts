/**
 * A cluster of hosts (see docs/cluster.md). The `cluster` commands find this
 * file in the working directory (or take --config); a driver gets it with
 * `cluster run driver.js` or `Cluster.start({ config })`. Most fields can also
 * be given as a flag (`--head ...`) or an environment variable
 * (`CLUSTER_HEAD=...`; docs/configuration.md lists them); flags win over the
 * environment, which wins over this file.
 */
import { defineConfig } from 'actor-cluster'

export default defineConfig({
  name: 'sweep',
  // Relative paths are relative to this file's folder, the project directory (synced to the hosts).
  tasks: './tasks.js',
  // The driver binds this; `head` is how the hosts reach it.
  listen: 'tcp://0.0.0.0:7100',
  head: 'tcp://head.lan:7100',
  // CURVE keys from `cluster keys --out cluster-keys`: only agents holding them may join.
  curve: { dir: './cluster-keys' },
  // This machine only drives; the hosts compute.
  localAgents: 0,
  hosts: './hosts.txt',
  ssh: { connectTimeoutS: 10, concurrency: 32 },
  batch: 'auto',
  heartbeatMs: 1000,
  nodeTimeoutMs: 3000,
})
