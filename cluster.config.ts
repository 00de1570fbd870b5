/**
 * This project's own configuration, and an example of one. `cluster run`,
 * `up`, `status` and `down` find it in the working directory; a driver uses
 * it when named (`Cluster.start({ config: './cluster.config.ts' })`, or the
 * `CLUSTER_CONFIG` variable that `cluster run` sets). Settings resolve as
 * defaults < this file < `CLUSTER_*` environment variables (`CLUSTER_THREADS=4`)
 * < options in code or command-line flags (`--threads 4`); docs/configuration.md
 * lists every variable.
 */
// The package's own name resolves here too (package.json "exports" allows self-reference), to dist/ once built.
import { defineConfig } from 'actor-cluster'

export default defineConfig({
  tasks: './dist/bench/tasks.js',
  // Where agents connect. Anything but loopback needs authentication (or insecure: true).
  listen: 'tcp://127.0.0.1:7100',
  // Agents inside the driver's process; 0 to wait for `cluster agent --connect ...`.
  localAgents: 1,
  threads: 2,
  batch: 'auto',
  heartbeatMs: 1000,
  nodeTimeoutMs: 3000,
  // The data plane: 'zmq' (brokerless, default), 'redis', 'amqp' or 'amqp+redis'.
  transport: 'zmq',
  // Brokers of the brokered designs, and the namespace agents join with --cluster-id (random if unset).
  redisUrl: 'redis://127.0.0.1:6379',
  amqpUrl: 'amqp://guest:guest@127.0.0.1:5672',
})
