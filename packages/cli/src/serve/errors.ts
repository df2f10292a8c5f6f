/** Errors the server answers with: an HTTP status and a one-line JSON body naming the field at fault. */

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly field?: string) {
    super(message);
    this.name = "HttpError";
  }
}

/** 400: the request names `field` wrongly; the message starts with the field. */
export function badRequest(field: string, problem: string): HttpError {
  return new HttpError(400, `${field}: ${problem}`, field);
}

/** 503: no capacity now (queue full, no worker in time, shutting down); the client may retry. */
export function unavailable(message: string): HttpError {
  return new HttpError(503, message);
}

/** The model failed on this request (its worker threw or died); the server itself carries on. */
export function modelFailure(e: unknown): HttpError {
  return e instanceof HttpError ? e : new HttpError(500, `model: ${e instanceof Error ? e.message : String(e)}`.replace(/\s*\n\s*/g, " "));
}
