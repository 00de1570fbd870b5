export { Cluster } from './driver/cluster.js'
export type { MapOptions, NodeInfo, ClusterStats, ClusterEvents, ClusterView, RetryInfo } from './driver/cluster.js'
export type { TaskOptions, SpawnOptions } from './driver/policy.js'
export type { TasksProxy, ActorRef } from './driver/proxies.js'
export { Agent } from './agent/agent.js'
export type { AgentState, AgentStats, AgentEvents } from './agent/agent.js'
export { defineConfig, resolveClusterOptions, resolveAgentOptions, CLUSTER_DEFAULTS, AGENT_DEFAULTS } from './options.js'
export type { ClusterOptions, ResolvedClusterOptions, AgentOptions, ResolvedAgentOptions, ClusterConfig, TasksModule } from './options.js'
export {
  ClusterError,
  InvalidArgumentError,
  RemoteTaskError,
  UnknownTaskError,
  UnknownActorError,
  UnknownMethodError,
  SerializationError,
  TasksModuleError,
  ClusterClosedError,
  ProtocolError,
  TransportError,
  ActorStoppedError,
  ActorLostError,
  NodeLostError,
  WorkerCrashedError,
  TaskTimeoutError,
  OutOfMemoryError,
  TaskCancelledError,
  AuthError,
} from './errors.js'
export type { ClusterErrorCode } from './errors.js'
export { PROTOCOL_VERSION } from './protocol/messages.js'
export { VERSION } from './version.js'
