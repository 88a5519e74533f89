/** A stream whose writes can be held back and then sent together (a net.Socket, an http.ServerResponse). */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

let held = new Set<Corkable>();
let scheduled = false;

function release(): void {
  const batch = held;
  held = new Set();
  scheduled = false;
  for (const target of batch) target.uncork();
}

/**
 * Holds what is written to `target` until the event loop comes round (setImmediate), then sends it
 * — everything written to it in this iteration in one syscall, and every held connection back to
 * back. Under load a gateway writes a frame to many sockets of the same peers per iteration; a write
 * that wakes a sleeping reader costs the kernel several times one that finds it awake
 * (docs/decisions.md). The delay is the rest of the current iteration: nothing waits for a timer.
 */
export function holdWrites(target: Corkable): void {
  if (held.has(target)) return;
  target.cork();
  held.add(target);
  if (!scheduled) {
    scheduled = true;
    setImmediate(release);
  }
}
