export { Cluster } from './driver/cluster.js'
export type { MapOptions, NodeInfo, ClusterStats, ClusterEvents, ClusterView, RetryInfo } from './driver/cluster.js'
export type { TaskOptions, SpawnOptions } from './driver/policy.js'
export type { TasksProxy, ActorRef } from './driver/proxies.js'
export { Agent } from './agent/agent.js'
export type { AgentState, AgentStats, AgentEvents, AgentActivity } from './agent/agent.js'
export { AgentPool } from './agent/pool.js'
export type { AgentPoolOptions } from './agent/pool.js'
export { loadConfig } from './config.js'
export type { LoadedConfig, SshOptions, RemoteOptions } from './config.js'
export { parseHostsFile } from './hosts/hosts-file.js'
export type { HostSpec } from './hosts/hosts-file.js'
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
  ConfigError,
  HostsFileError,
  SshError,
  HostSetupError,
  AgentStartError,
} from './errors.js'
export type { ClusterErrorCode, HostsFileProblem, SshFailure, HostSetupProblem } from './errors.js'
export { PROTOCOL_VERSION } from './protocol/messages.js'
export { VERSION } from './version.js'
