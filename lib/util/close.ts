/**
 * Bounded, step-isolated shutdown. Every `close()` in the runtime is a list
 * of named steps run in order: each gets its own time limit, a step that
 * throws or hangs does not skip the ones after it, and what went wrong is
 * returned (and can be logged) rather than thrown from `close()`.
 */

/** One step of a shutdown: `run` is awaited for at most the step's (or the list's) limit. */
export interface CloseStep {
  readonly name: string
  readonly run: () => void | Promise<void>
  /** This step's own limit in ms (a graceful drain may need longer than a socket close). */
  readonly timeoutMs?: number
}

/** A step that failed or ran out of time. */
export interface CloseProblem {
  readonly step: string
  readonly error: Error
}

/**
 * Runs `steps` one after another, each bounded by its `timeoutMs` or by
 * `timeoutMs`; a step past its limit is left running and reported. Never
 * throws.
 */
export async function closeSteps(steps: readonly CloseStep[], timeoutMs: number): Promise<CloseProblem[]> {
  const problems: CloseProblem[] = []
  for (const step of steps) {
    const limit = step.timeoutMs ?? timeoutMs
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        Promise.resolve().then(step.run),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${step.name} did not finish within ${limit} ms`)), limit)
          timer.unref()
        }),
      ])
    } catch (err) {
      problems.push({ step: step.name, error: err instanceof Error ? err : new Error(String(err)) })
    } finally {
      clearTimeout(timer)
    }
  }
  return problems
}
