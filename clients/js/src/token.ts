// An access token's life, read from the JWT itself: when it expires, and when to ask for
// the next one. Pure functions of the token and the (hub's) time, so the refresh policy
// is tested without a clock or a hub.

/** setTimeout's limit (a longer delay fires at once). */
const MAX_DELAY = 2 ** 31 - 1;

/** A JWT's `exp` and `iat` (seconds since the epoch), when it says. */
export function claims(token?: string): { exp?: number; iat?: number } {
  try {
    const p = token!.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const c = JSON.parse(atob(p));
    return { exp: typeof c.exp === 'number' ? c.exp : undefined, iat: typeof c.iat === 'number' ? c.iat : undefined };
  } catch {
    return {};
  }
}

/** The token is known to have expired at `now` (ms, the hub's clock). */
export function expired(token: string | undefined, now: number): boolean {
  const { exp } = claims(token);
  return exp !== undefined && exp * 1000 <= now;
}

/** How long to wait before refreshing `token` (ms), or undefined when it does not
 * expire. At 80% of the remaining life, so a slow getToken still lands in time. The
 * local clock may be off: `now` is the hub's time, and when that disagrees with the
 * token's own life (exp - iat), the latter wins. Never sooner than 5 s (half the life for
 * a shorter token; 1 s at least: no hot loop), never past setTimeout's limit. */
export function refreshDelay(token: string | undefined, now: number): number | undefined {
  const { exp, iat } = claims(token);
  if (exp === undefined) return undefined;
  const left = exp * 1000 - now;
  const life = iat !== undefined && exp > iat ? (exp - iat) * 1000 : left;
  const floor = Math.min(5000, Math.max(1000, life / 2));
  return Math.min(MAX_DELAY, Math.max(floor, 0.8 * (left > 0 && left <= life ? left : life)));
}
