import { ERROR_TABLE, type AppError } from '../domain/errors.ts';

export const ok = <T>(data: T) => ({ status_code: 200, status_message: 'SUCCESS', data });

export const errorBody = (err: AppError) => ({ status_code: ERROR_TABLE[err.code].status, status_message: err.message, data: err.data });
