/**
 * The one error type of Parley. Every failure that reaches a client is an AppError with a code
 * from this closed catalogue; each transport maps the code through ERROR_TABLE.
 */
export const ERROR_TABLE = {
  invalid_request: { status: 10400, http: 400, message: 'Invalid request', wsClose: null },
  unauthorized: { status: 10401, http: 401, message: 'Unauthorized', wsClose: 1008 },
  forbidden: { status: 10403, http: 403, message: 'No permission', wsClose: 1008 },
  not_found: { status: 10404, http: 404, message: 'Not found', wsClose: 1008 },
  conflict: { status: 10409, http: 409, message: 'A turn is already running in this conversation', wsClose: null },
  too_large: { status: 10413, http: 413, message: 'Message too long', wsClose: 1009 },
  rate_limited: { status: 10429, http: 429, message: 'Rate limited', wsClose: null },
  app_deleted: { status: 10420, http: 404, message: 'App deleted', wsClose: 1008 },
  app_offline: { status: 10421, http: 403, message: 'App not online', wsClose: 1008 },
  app_unbuildable: { status: 10422, http: 422, message: 'App model not configured or draft does not build', wsClose: 1013 },
  busy: { status: 10503, http: 503, message: 'Server busy', wsClose: 1013 },
  upstream_error: { status: 10502, http: 502, message: 'LLM provider error', wsClose: null },
  upstream_timeout: { status: 10504, http: 504, message: 'LLM provider timeout', wsClose: null },
  workflow_input_timeout: { status: 10527, http: 408, message: 'Workflow input timeout', wsClose: null },
  workflow_max_steps: { status: 10528, http: 422, message: 'Workflow node exceeded max steps', wsClose: null },
  workflow_node_invalid: { status: 10531, http: 422, message: 'Workflow node parameters invalid', wsClose: null },
  workflow_failed: { status: 10541, http: 500, message: 'Workflow run failed', wsClose: null },
  internal: { status: 10500, http: 500, message: 'Internal error', wsClose: 1011 },
} as const;

export type ErrorCode = keyof typeof ERROR_TABLE;

export interface FieldError {
  path: string;
  message: string;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly data: unknown;

  constructor(code: ErrorCode, message?: string, options?: { data?: unknown; cause?: unknown }) {
    super(message ?? ERROR_TABLE[code].message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.data = options?.data ?? null;
  }

  get statusCode(): number {
    return ERROR_TABLE[this.code].status;
  }

  get httpStatus(): number {
    return ERROR_TABLE[this.code].http;
  }

  static invalid(errors: FieldError[], message = 'Invalid request'): AppError {
    return new AppError('invalid_request', message, { data: { errors } });
  }

  static notFound(what = 'Not found'): AppError {
    return new AppError('not_found', what);
  }
}

/** Anything thrown that is not an AppError becomes `internal`; the cause stays for the log only. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  return new AppError('internal', undefined, { cause: err });
}
