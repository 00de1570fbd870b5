/** Whether `v` is a promise or any other thenable (what `await` would wait on). */
export const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function'
