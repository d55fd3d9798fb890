/**
 * `work`, or a rejection once `deadlineMs` has passed (`undefined`: no deadline). The work goes
 * on after the deadline (its connection is bounded by its own timeouts); its late result, or
 * error, is dropped. The rejection is worded like node-postgres's own client-side timeout, which
 * isConnectionError (an outage) knows and mayHaveCommitted treats as "may have committed".
 */
export async function withDeadline<T>(work: Promise<T>, deadlineMs: number | undefined): Promise<T> {
  if (deadlineMs === undefined) return work;
  work.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Query read timeout: no answer from the database within ${deadlineMs} ms (RATELIMIT_DB_TIMEOUT and its margin)`)),
          deadlineMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
