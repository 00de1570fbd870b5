export { Cluster } from './driver/cluster.js'
export { SharedRef } from './protocol/shared-ref.js'
export type {
  MapOptions,
  MapReduce,
  MapReduceOptions,
  ReduceOptions,
  NodeInfo,
  ClusterStats,
  ClusterEvents,
  ClusterView,
  RetryInfo,
  ActorInfo,
  ActorErrorEvent,
  ActorFailure,
  TaskFailedEvent,
  TaskOptions,
  SpawnOptions,
  StopOptions,
  TasksProxy,
  ActorRef,
  SharedStats,
} from './driver/types.js'
export type { ClusterSnapshot, NodeSnapshot } from './monitor/monitor.js'
export type { FailureRecord, TaskNameCounts } from './monitor/task-stats.js'
export type { LatencySummary } from './monitor/histogram.js'
export { Progress } from './monitor/progress.js'
export type { ProgressOptions, ProgressState } from './monitor/progress.js'
export { DASHBOARD_DEFAULTS, LOG_LEVELS, resolveDashboardOptions } from './monitor/options.js'
export type { DashboardOptions, ResolvedDashboardOptions, LogLevel } from './monitor/options.js'
export { createLogger } from './monitor/log.js'
export { fetchSnapshot } from './monitor/client.js'
export type { FetchSnapshotOptions } from './monitor/client.js'
export type { Logger } from './monitor/log.js'
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
  ActorNameError,
  UnknownNodeError,
  UnknownMethodError,
  SerializationError,
  SharedValueError,
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
  CombinerError,
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
