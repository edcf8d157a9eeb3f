// The frames of a watch as async iterators: each iterator gets every frame after it was
// made, once, in order, and ends (or throws the watch's error) when the watch stops.

import type { Frame } from './frames.js';

export interface Feed {
  push(frame: Frame): void;
  /** The watch stopped: pending next() calls end, or throw `failure`. */
  end(failure?: Error): void;
  iterate(): AsyncIterableIterator<Frame>;
}

export function createFeed(): Feed {
  const sinks = new Set<{ push(f: Frame): void; end(): void }>();
  let ended = false;
  let failure: Error | undefined;
  return {
    push: (f) => sinks.forEach((s) => s.push(f)),
    end(err) {
      ended = true;
      failure = err;
      sinks.forEach((s) => s.end());
    },
    iterate() {
      const buf: Frame[] = [];
      // Every pending next(), in order: the protocol allows several at once.
      const waiting: Array<{ ok(r: IteratorResult<Frame>): void; fail(e: Error): void }> = [];
      let returned = false;
      const finish = () => sinks.delete(sink);
      const sink = {
        push: (f: Frame) => {
          const w = waiting.shift();
          if (w) w.ok({ value: f, done: false });
          else buf.push(f);
        },
        end: () => {
          finish();
          for (const w of waiting.splice(0)) failure ? w.fail(failure) : w.ok({ value: undefined, done: true });
        },
      };
      sinks.add(sink);
      return {
        next(): Promise<IteratorResult<Frame>> {
          if (buf.length) return Promise.resolve({ value: buf.shift()!, done: false });
          if (returned || ended) {
            finish();
            return failure && !returned ? Promise.reject(failure) : Promise.resolve({ value: undefined, done: true });
          }
          return new Promise((ok, fail) => waiting.push({ ok, fail }));
        },
        async return(): Promise<IteratorResult<Frame>> {
          finish();
          returned = true;
          buf.length = 0;
          for (const w of waiting.splice(0)) w.ok({ value: undefined, done: true });
          return { value: undefined, done: true };
        },
        [Symbol.asyncIterator]() {
          return this;
        },
      };
    },
  };
}
