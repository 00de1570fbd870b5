/**
 * Example configuration. Copy it next to your driver and pass it to
 * `Cluster.start({ ...config })`. Every option can also be given on the
 * command line (`--threads 4`) or as an environment variable (`CLUSTER_THREADS=4`);
 * flags win over the environment, which wins over this file.
 */
import { defineConfig } from './lib/index.js'

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
