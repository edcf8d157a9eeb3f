// A link to the hub, whatever carries it (websocket.ts, sse.ts): what the watcher may do
// with one, and what a transport tells the watcher. The watcher ignores a link's news
// once it has let go of it.

export interface Link {
  /** Sends a client frame (WebSocket only: SSE has no way back, and needs none). */
  send(frame: object): void;
  /** Lets go of the link: no callback follows. */
  close(): void;
}

export interface LinkEvents {
  /** One frame's text. */
  text(data: string): void;
  /** The link ended: its WebSocket close code, or none (network error, end of stream). */
  ended(code?: number): void;
  /** The hub refused the request over HTTP: its status and JSON body (if any). */
  refused(status: number, body: unknown): void;
}
