/**
 * Progress of a command over many hosts. On a terminal, one status line is
 * redrawn in place and each finished host is printed above it; otherwise one
 * line per finished host, so logs stay readable.
 */
export class Progress {
  private finished = 0
  private failed = 0
  private readonly running = new Map<string, string>()
  private readonly tty: boolean

  constructor(
    private readonly verb: string,
    /** Hosts in all (it may be set once known). */
    public total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true
  }

  /** A host moved on to a new step (probe, sync, start…). */
  step(host: string, what: string): void {
    this.running.set(host, what)
    this.draw()
  }

  /** A host is done. */
  done(host: string, ok: boolean, text: string): void {
    this.running.delete(host)
    this.finished++
    if (!ok) this.failed++
    this.clear()
    this.out.write(`${ok ? '✓' : '✗'} ${host}: ${text}\n`)
    this.draw()
  }

  end(): void {
    this.clear()
  }

  private clear(): void {
    if (this.tty) this.out.write('\r\x1b[K')
  }

  private draw(): void {
    if (!this.tty) return
    const [host, what] = this.running.entries().next().value ?? ['', '']
    const now = host ? ` · ${host}: ${what}${this.running.size > 1 ? ` (+${this.running.size - 1})` : ''}` : ''
    const line = `${this.verb}: ${this.finished}/${this.total} done${this.failed ? `, ${this.failed} failed` : ''}${now}`
    this.out.write(`\r\x1b[K${line.slice(0, (this.out.columns || 100) - 1)}`)
  }
}

/** Runs `fn` over `items`, at most `limit` at once; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!, i)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker))
  return out
}

/** A plain text table: a header row, then rows; columns padded to their widest cell. */
export function formatTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(head), ...rows.map(line)].join('\n')
}
