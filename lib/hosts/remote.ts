/**
 * The shell scripts `cluster up`, `status` and `down` run on each host (with
 * `sh -s`, arguments as `$1`…). They print `key=value` lines, which
 * {@link parseReply} reads; nothing they print is trusted further than that.
 * POSIX sh only, so they run wherever OpenSSH does.
 */

import { InvalidArgumentError } from '../errors.js'

/**
 * Shared helpers: zombie-aware liveness, the default run directory (under
 * the user's home: a predictable path in a shared /tmp could be created
 * first by another user), and `owndir`, which makes the run directory ours
 * alone or says why it cannot (`why=` on stdout, status 1): a symbolic link,
 * another user's directory, one whose parent another user may write to
 * without the sticky bit, or one that cannot be made 0700.
 */
const PRELUDE = `
alive() { kill -0 "$1" 2>/dev/null || return 1; case "$(ps -p "$1" -o stat= 2>/dev/null)" in Z*) return 1;; esac; return 0; }
ours() { alive "$1" && ps -p "$1" -o args= 2>/dev/null | grep -qF -- "$2"; }
abs() { case "$1" in /*) printf '%s' "$1";; *) printf '%s/%s' "$HOME" "$1";; esac; }
rundir() { if [ -n "$1" ]; then abs "$1"; else printf '%s/.actor-cluster/run/%s' "$HOME" "$2"; fi; }
owndir() {
  [ -L "$1" ] && { echo "why=it is a symbolic link"; return 1; }
  [ -d "$1" ] || (umask 077 && mkdir -p "$1") 2>/dev/null || { echo "why=it cannot be created"; return 1; }
  p="$(ls -ldn "$(dirname "$1")" 2>/dev/null)"
  pu="$(printf '%s\\n' "$p" | awk '{print $3}')"
  [ "$pu" = "$(id -u)" ] || [ "$pu" = 0 ] || { echo "why=its parent belongs to another user (uid $pu)"; return 1; }
  case "$p" in d????w???[tT]*|d???????w[tT]*) ;; d????w*|d???????w*) echo "why=its parent is writable by other users"; return 1;; esac
  [ ! -L "$1" ] && [ -d "$1" ] || { echo "why=it is not a directory"; return 1; }
  [ -O "$1" ] || { echo "why=it belongs to another user (uid $(ls -ldn "$1" | awk '{print $3}'))"; return 1; }
  chmod 700 "$1" 2>/dev/null || { echo "why=it cannot be made private (chmod 700)"; return 1; }
  case "$(ls -ldn "$1" 2>/dev/null)" in drwx------*) return 0;; esac
  echo "why=it is not private after chmod 700"; return 1
}
`

/**
 * Probe: `$1` node, `$2` cli ('' = search), `$3` project dir, `$4` 1 to prepare
 * for a sync. Reports the host's name, cores, Node.js version, where
 * actor-cluster is and its version, or an `error=`.
 */
export const PROBE_SCRIPT = `${PRELUDE}
node="$1"; cli="$2"; dir="$(abs "$3")"; sync="$4"
echo "hostname=$(hostname 2>/dev/null || uname -n)"
echo "cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 0)"
echo "dir=$dir"
if ! command -v "$node" >/dev/null 2>&1; then echo "error=no-node"; echo "path=$PATH"; exit 0; fi
echo "node=$("$node" --version 2>/dev/null | head -n 1)"
if [ "$sync" = 1 ]; then
  command -v rsync >/dev/null 2>&1 || { echo "error=no-rsync"; exit 0; }
  mkdir -p "$dir" 2>/dev/null || { echo "error=dir"; exit 0; }
fi
if [ -z "$cli" ]; then
  g="$("$node" -p 'require("path").resolve(process.execPath, "../../lib/node_modules/actor-cluster/dist/bin/cluster.js")' 2>/dev/null)"
  for c in "$dir/node_modules/actor-cluster/dist/bin/cluster.js" "$g"; do
    if [ -n "$c" ] && [ -f "$c" ]; then cli="$c"; break; fi
  done
  if [ -z "$cli" ] && [ -f "$dir/dist/bin/cluster.js" ] && grep -q '"name": *"actor-cluster"' "$dir/package.json" 2>/dev/null; then cli="$dir/dist/bin/cluster.js"; fi
  if [ -z "$cli" ]; then echo "error=no-actor-cluster"; exit 0; fi
fi
cli="$(abs "$cli")"
echo "cli=$cli"
[ -f "$cli" ] || { echo "error=no-actor-cluster"; exit 0; }
out="$("$node" "$cli" --version 2>&1)" || { echo "error=cli-failed"; printf '%s\\n' "$out" | tail -n 8 | sed 's/^/log=/'; exit 0; }
echo "version=$(printf '%s\\n' "$out" | tail -n 1)"
`

/**
 * Start (see {@link startScript}): `$1` node, `$2` cli, `$3` working dir, `$4` run dir ('' = default),
 * `$5` agent id, `$6` head address, `$7` tasks module (relative to the
 * working dir or absolute), `$8` threads (0 = cores), `$9` seconds to wait
 * for registration, `$10` heartbeat ms, `$11` driver timeout ms ('' = the
 * agent's default), `$12` cluster name.
 *
 * Starts the agent detached (setsid/nohup, output to a log), then waits until
 * its status file says it joined the head. An agent that exits, or does not
 * register in time, is stopped and its files removed: nothing half-started
 * stays behind; the end of its log is printed as `log=` lines.
 */
const START_SCRIPT = `${PRELUDE}
node="$1"; cli="$2"; wd="$(abs "$3")"; rd="$4"; id="$5"; connect="$6"; tasks="$7"; threads="$8"; wait="$9"
shift 9; hb="$1"; dto="$2"; name="$3"
run="$(rundir "$rd" "$name")"
owndir "$run" || { echo "error=rundir"; echo "rundir=$run"; exit 0; }
echo "rundir=$run"
pidf="$run/$id.pid"; st="$run/$id.json"; log="$run/$id.log"; keys="$run/$id.keys"
if [ -f "$pidf" ]; then
  old="$(cat "$pidf")"
  if ours "$old" "$id"; then echo "already=$old"; [ -f "$st" ] && echo "status=$(cat "$st")"; exit 0; fi
  rm -f "$pidf"
fi
cleanup() { rm -rf "$pidf" "$st" "$log" "$keys"; }
[ -d "$wd" ] || { echo "error=dir"; echo "dir=$wd"; exit 0; }
case "$tasks" in /*) ;; *) tasks="$wd/$tasks";; esac
[ -f "$tasks" ] || { echo "error=no-tasks"; echo "tasks=$tasks"; exit 0; }
cd "$wd" || { echo "error=dir"; echo "dir=$wd"; exit 0; }
rm -f "$st"
#KEYS#
set -- "$node" "$cli" agent --connect "$connect" --tasks "$tasks" --id "$id" --status-file "$st"
[ "$threads" = 0 ] || set -- "$@" --threads "$threads"
[ -z "$hb" ] || set -- "$@" --heartbeat-ms "$hb"
[ -z "$dto" ] || set -- "$@" --driver-timeout-ms "$dto"
[ ! -d "$keys" ] || set -- "$@" --keys "$keys"
if command -v setsid >/dev/null 2>&1; then
  setsid "$@" >"$log" 2>&1 </dev/null &
else
  nohup "$@" >"$log" 2>&1 </dev/null &
fi
pid=$!
echo "$pid" >"$pidf"
echo "pid=$pid"
n=0
limit=$((wait * 10))
while :; do
  if ! alive "$pid"; then echo "error=exited"; tail -n 20 "$log" 2>/dev/null | sed 's/^/log=/'; cleanup; exit 0; fi
  if [ -f "$st" ] && grep -q '"state":"ready"' "$st"; then echo "status=$(cat "$st")"; exit 0; fi
  n=$((n + 1))
  [ "$n" -ge "$limit" ] && break
  sleep 0.1
done
echo "error=not-registered"
tail -n 20 "$log" 2>/dev/null | sed 's/^/log=/'
kill -TERM "$pid" 2>/dev/null
n=0
while alive "$pid" && [ "$n" -lt 30 ]; do sleep 0.1; n=$((n + 1)); done
alive "$pid" && kill -KILL "$pid" 2>/dev/null
cleanup
rmdir "$run" 2>/dev/null
`

/** An agent's CURVE keys as `cluster up` hands them to a host. */
export interface AgentKeys {
  readonly serverPublicKey: string
  readonly agentKey: { readonly publicKey: string; readonly secretKey: string }
}

/**
 * The start script; with `keys`, it first writes the driver's public key and
 * the agent key pair (mode 600, new files in a new directory inside the
 * private run directory) and starts the agent
 * with `--keys`. Keys travel inside the script, on SSH's stdin: never on a
 * command line, where \`ps\` would show them.
 */
export function startScript(keys?: AgentKeys): string {
  // Function replacements: a `$` in a key must not be read as a replacement pattern.
  if (!keys) return START_SCRIPT.replace('#KEYS#', () => 'rm -rf "$keys"')
  const z85 = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/
  for (const k of [keys.serverPublicKey, keys.agentKey.publicKey, keys.agentKey.secretKey]) {
    if (!z85.test(k)) throw new InvalidArgumentError('CURVE keys must be 40-character Z85 strings')
  }
  // A fresh directory in the private run directory, and new files only (set -C): nothing planted there receives the secret.
  const write = [
    '(umask 077 && set -C && rm -rf "$keys" && mkdir "$keys" && cat >"$keys/server.pub" <<\'AC_KEYS_EOF\' && cat >"$keys/agent.json" <<\'AC_KEYS_EOF2\'',
    keys.serverPublicKey,
    'AC_KEYS_EOF',
    JSON.stringify({ publicKey: keys.agentKey.publicKey, secretKey: keys.agentKey.secretKey }),
    'AC_KEYS_EOF2',
    ') || { echo "error=rundir"; echo "why=the key files could not be created anew"; exit 0; }',
  ].join('\n')
  return START_SCRIPT.replace('#KEYS#', () => write)
}

/**
 * Stop: `$1` run dir ('' = default), `$2` cluster name, `$3` seconds to let an
 * agent finish its running tasks, then agent ids (none = every agent of the
 * cluster on this host). SIGTERM lets an agent hand its queued tasks back;
 * SIGKILL follows after the grace period. Removes the agents' files, and the
 * run directory once empty. One line per agent: `stopped=`, `killed=`,
 * `gone=` (its pid file named a process that had already exited) or `none=`.
 */
export const STOP_SCRIPT = `${PRELUDE}
run="$(rundir "$1" "$2")"; t="$3"; shift 3
if [ "$#" -eq 0 ] && [ -d "$run" ]; then
  for f in "$run"/*.pid; do [ -f "$f" ] && set -- "$@" "$(basename "$f" .pid)"; done
fi
for id in "$@"; do
  pidf="$run/$id.pid"
  if [ ! -f "$pidf" ]; then echo "none=$id"; rm -rf "$run/$id.json" "$run/$id.log" "$run/$id.keys"; continue; fi
  pid="$(cat "$pidf")"
  if ours "$pid" "$id"; then
    kill -TERM "$pid" 2>/dev/null
    n=0
    while alive "$pid" && [ "$n" -lt $((t * 10)) ]; do sleep 0.1; n=$((n + 1)); done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; echo "killed=$id $pid"; else echo "stopped=$id $pid"; fi
  else
    echo "gone=$id $pid"
  fi
  rm -rf "$pidf" "$run/$id.json" "$run/$id.log" "$run/$id.keys"
done
rmdir "$run" 2>/dev/null && rmdir "$(dirname "$run")" 2>/dev/null
exit 0
`

/**
 * Status: `$1` run dir ('' = default), `$2` cluster name, then agent ids.
 * Per agent: `agent=`, `pid=`, `alive=` 0/1 and its `status=` file; `now=`
 * the host's clock (seconds), to judge the status file's age without trusting
 * clocks to agree.
 */
export const STATUS_SCRIPT = `${PRELUDE}
run="$(rundir "$1" "$2")"; shift 2
echo "now=$(date +%s)"
for id in "$@"; do
  echo "agent=$id"
  pidf="$run/$id.pid"
  [ -f "$pidf" ] || { echo "alive=0"; continue; }
  pid="$(cat "$pidf")"
  echo "pid=$pid"
  if ours "$pid" "$id"; then echo "alive=1"; else echo "alive=0"; fi
  [ -f "$run/$id.json" ] && echo "status=$(cat "$run/$id.json")"
done
exit 0
`

/** One `key=value` per line; `log=` lines are gathered; a line without `=` is ignored. */
export interface Reply {
  readonly values: ReadonlyMap<string, string>
  readonly log: readonly string[]
  /** Every `key=value` in order (for replies that repeat keys, like `agent=`). */
  readonly pairs: readonly (readonly [string, string])[]
}

export function parseReply(stdout: string): Reply {
  const values = new Map<string, string>()
  const log: string[] = []
  const pairs: [string, string][] = []
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=')
    if (eq <= 0) continue
    const key = line.slice(0, eq)
    if (!/^[a-z]+$/.test(key)) continue
    const value = line.slice(eq + 1).replace(/\r$/, '')
    pairs.push([key, value])
    if (key === 'log') log.push(value)
    else values.set(key, value)
  }
  return { values, log, pairs }
}
