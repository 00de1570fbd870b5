/**
 * A driver for the hosts `cluster up` started: `cluster run driver.js` gives
 * it the config (head address, keys), so `Cluster.start()` needs no options.
 */
import { Cluster } from 'actor-cluster'
import type * as Tasks from './tasks.js'

await using cluster = await Cluster.start()
while (cluster.nodes().length === 0) await new Promise((r) => setTimeout(r, 100))
console.log(`${cluster.nodes().length} hosts, ${cluster.nodes().reduce((n, x) => n + x.threads, 0)} threads`)
const tasks = cluster.tasks<typeof Tasks>()
const estimates = await Promise.all(Array.from({ length: 1000 }, (_, i) => tasks.estimatePi(100_000, i + 1)))
console.log(`π ≈ ${estimates.reduce((a, b) => a + b, 0) / estimates.length}`)
