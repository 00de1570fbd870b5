/**
 * The driver of job.sbatch: under `cluster run` in a Slurm job,
 * `Cluster.start()` returns once every node's agent has registered.
 */
import { Cluster } from 'actor-cluster'
import type * as Tasks from '../hosts/tasks.js'

await using cluster = await Cluster.start()
console.log(`${cluster.nodes().length} nodes, ${cluster.nodes().reduce((n, x) => n + x.threads, 0)} threads`)
const tasks = cluster.tasks<typeof Tasks>()
const estimates = await Promise.all(Array.from({ length: 10_000 }, (_, i) => tasks.estimatePi(100_000, i + 1)))
console.log(`π ≈ ${estimates.reduce((a, b) => a + b, 0) / estimates.length}`)
