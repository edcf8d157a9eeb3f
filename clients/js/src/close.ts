// What the client does when a link ends, by WebSocket close code: the one table the
// state machine (machine.ts) reads, so a code's meaning is written once (docs/CLIENTS.md
// shows the same table; the hub's side is crates/hub/src/wire/close.rs).

/** `renew`: get a token, reconnect at once. `restart`: reconnect promptly, spread out.
 * `overloaded`: back off from a 5 s base. `lost`: no close frame (a dropped link, or a
 * refused handshake: probe over HTTP if the link never said `connected`). `retry`: back
 * off, then reconnect. */
export type Reaction = 'renew' | 'restart' | 'overloaded' | 'lost' | 'retry';

export const CLOSE_CODES: Readonly<Record<number, Reaction>> = {
  1006: 'lost', // abnormal closure: no close frame
  1012: 'restart', // service restart (hub SIGTERM)
  1013: 'overloaded', // a limit (connections, projects) is reached
  4429: 'overloaded', // slow consumer
  4401: 'renew', // token expired
  // 4408 heartbeat timeout, 1009 too big, 1002 protocol error, 1007 invalid UTF-8 and any
  // code a newer hub may use: back off and resume.
};

/** The reaction to a link's end: its close code, or none (a network error, an SSE
 * stream that ended, a WebSocket that could not even be made). */
export const reaction = (code?: number): Reaction => (code === undefined ? 'lost' : CLOSE_CODES[code] ?? 'retry');
