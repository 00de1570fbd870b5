import { test } from 'node:test'
import assert from 'node:assert/strict'
import { slurmAllocation } from '../../lib/hosts/slurm.js'
import { resolveClusterOptions } from '../../lib/options.js'
import { resolveClusterSettings } from '../../lib/settings.js'
import { InvalidArgumentError } from '../../lib/errors.js'

test('slurmAllocation: the job and its node count from Slurm variables, nothing outside a job', () => {
  assert.equal(slurmAllocation({}), undefined)
  assert.deepEqual(slurmAllocation({ SLURM_JOB_ID: '42', SLURM_JOB_NUM_NODES: '3' }), { jobId: '42', nodes: 3 })
  assert.deepEqual(slurmAllocation({ SLURM_JOBID: '7', SLURM_NNODES: '2' }), { jobId: '7', nodes: 2 })
  assert.deepEqual(slurmAllocation({ SLURM_JOB_ID: '8' }), { jobId: '8', nodes: 1 })
  assert.throws(() => slurmAllocation({ SLURM_JOB_ID: '9', SLURM_JOB_NUM_NODES: 'x' }), InvalidArgumentError)
})

test('waitForNodes: default 0, from CLUSTER_WAIT_FOR_NODES, checked', async () => {
  const d = resolveClusterOptions({ localAgents: 0 })
  assert.equal(d.waitForNodes, 0)
  assert.equal(d.waitForNodesMs, 120_000)
  const r = await resolveClusterSettings({ config: {}, localAgents: 0 }, { CLUSTER_WAIT_FOR_NODES: '3', CLUSTER_WAIT_FOR_NODES_MS: '5000' })
  assert.equal(r.waitForNodes, 3)
  assert.equal(r.waitForNodesMs, 5000)
  assert.throws(() => resolveClusterOptions({ localAgents: 0, waitForNodes: -1 }), /options\.waitForNodes/)
  await assert.rejects(resolveClusterSettings({ config: {}, localAgents: 0 }, { CLUSTER_WAIT_FOR_NODES: 'many' }), /CLUSTER_WAIT_FOR_NODES/)
})

test('CLUSTER_CURVE_DIR names the keys directory, resolved', async () => {
  const r = await resolveClusterSettings({ config: {}, localAgents: 0 }, { CLUSTER_CURVE_DIR: 'keys' })
  assert.deepEqual(r.curve, { dir: `${process.cwd()}/keys` })
})
