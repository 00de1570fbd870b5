/**
 * The config of a Slurm job. Inside the job, `cluster run` adds what depends
 * on the allocation: the address to bind, the keys made for the job, and the
 * number of agents `Cluster.start()` waits for (one per node).
 */
import { defineConfig } from 'actor-cluster'

export default defineConfig({
  // Relative to this file's folder, on the shared filesystem.
  tasks: '../hosts/tasks.js',
  heartbeatMs: 1000,
  nodeTimeoutMs: 5000,
})
