// Awaiting GPU work without stealing a core from a CPU adapter.
//
// Dawn's Node bindings poll for completed GPU events by re-scheduling themselves with
// `setImmediate` for as long as a promise (onSubmittedWorkDone, mapAsync) is pending: a busy loop
// on the JS thread. On lavapipe, whose worker threads do the actual GPU work on the same few cores,
// that loop takes one core of two (measured: the JS thread as busy as each lavapipe worker during a
// conv). While `quietly` awaits, `setImmediate` is routed through a timer of `pollMs`, so Dawn polls
// about once per millisecond instead.

let depth = 0;
let original: typeof globalThis.setImmediate | undefined;

/** Run `start` (which begins a Dawn async operation) and await it with throttled event polling. */
export async function quietly<T>(start: () => Promise<T>, pollMs = 1): Promise<T> {
  const g = globalThis as { setImmediate?: typeof globalThis.setImmediate };
  if (depth++ === 0) {
    original = g.setImmediate;
    const throttled = (cb: (...args: unknown[]) => void, ...args: unknown[]) => setTimeout(cb, pollMs, ...args);
    g.setImmediate = throttled as unknown as typeof globalThis.setImmediate;
  }
  try {
    return await start();
  } finally {
    if (--depth === 0) {
      if (original) g.setImmediate = original;
      else delete g.setImmediate; // a runtime without setImmediate gets none back
      original = undefined;
    }
  }
}
