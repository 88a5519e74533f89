/**
 * The one error type of Parley. Every failure that reaches a client is an AppError with a code
 * from this closed catalogue. Each code's row says its envelope `status_code`, HTTP status, default
 * message, and how a WebSocket closes when the error ends its connection (PROTOCOL.md §3, §6).
 * Transports with their own error shapes (OpenAI, Astron) map every code in a `Record<ErrorCode, …>`
 * of their own, so a new code does not compile until each of them says what it becomes.
 */
interface ErrorEntry {
  status: number;
  http: number;
  message: string;
  /** close code and reason when this error ends a WebSocket (a refused connect, an oversized frame, an expired token) */
  close: readonly [code: number, reason: string];
}

/** a code that never ends a socket: if it ever did, the connection failed unexpectedly */
const UNEXPECTED = [1011, 'internal error'] as const;

export const ERROR_TABLE = {
  // at connect, only the chat_id can be invalid
  invalid_request: { status: 10400, http: 400, message: 'Invalid request', close: [1008, 'invalid chat_id'] },
  unauthorized: { status: 10401, http: 401, message: 'Unauthorized', close: [1008, 'Unauthorized'] },
  forbidden: { status: 10403, http: 403, message: 'No permission', close: [1008, 'no permission'] },
  /** the path pins another kind of app (`/workflow/chat/` for a chat app) */
  app_kind_mismatch: { status: 10403, http: 403, message: 'app kind mismatch', close: [1008, 'app kind mismatch'] },
  /**
   * someone else's conversation, a deleted one, or one of another app (policy.ts): HTTP answers it
   * exactly like a missing one (404, PROTOCOL.md §8.10); a WebSocket refuses it as no permission
   */
  conversation_denied: { status: 10403, http: 404, message: 'no permission', close: [1008, 'no permission'] },
  not_found: { status: 10404, http: 404, message: 'Not found', close: [1008, 'app deleted'] },
  conflict: { status: 10409, http: 409, message: 'A turn is already running in this conversation', close: UNEXPECTED },
  too_large: { status: 10413, http: 413, message: 'Message too long', close: [1009, 'message too big'] },
  rate_limited: { status: 10429, http: 429, message: 'Rate limited', close: UNEXPECTED },
  app_deleted: { status: 10420, http: 404, message: 'App deleted', close: [1008, 'app deleted'] },
  app_offline: { status: 10421, http: 403, message: 'App not online', close: [1008, 'app not online'] },
  app_unbuildable: { status: 10422, http: 422, message: 'App model not configured or draft does not build', close: [1013, 'draft does not build'] },
  busy: { status: 10503, http: 503, message: 'Server busy', close: [1013, 'server busy'] },
  upstream_error: { status: 10502, http: 502, message: 'LLM provider error', close: UNEXPECTED },
  upstream_timeout: { status: 10504, http: 504, message: 'LLM provider timeout', close: UNEXPECTED },
  workflow_input_timeout: { status: 10527, http: 408, message: 'Workflow input timeout', close: UNEXPECTED },
  workflow_max_steps: { status: 10528, http: 422, message: 'Workflow node exceeded max steps', close: UNEXPECTED },
  workflow_node_invalid: { status: 10531, http: 422, message: 'Workflow node parameters invalid', close: UNEXPECTED },
  workflow_failed: { status: 10541, http: 500, message: 'Workflow run failed', close: UNEXPECTED },
  internal: { status: 10500, http: 500, message: 'Internal error', close: UNEXPECTED },
} as const satisfies Record<string, ErrorEntry>;

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

/** `retry_after` of a rate_limited error, in seconds (60 when it does not say). */
export const retryAfter = (e: AppError): string => String((e.data as { retry_after?: number } | null)?.retry_after ?? 60);
