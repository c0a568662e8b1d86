// Coded errors with an HTTP status. Everything a caller did wrong is a 4xx whose message says
// what to fix; the HTTP error handler turns these into {statusCode, error, message}.
import { STATUS_CODES } from 'node:http';

export class HttpError extends Error {
  readonly statusCode: number;
  readonly error: string;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
    this.error = STATUS_CODES[statusCode] ?? 'Error';
  }
  toJSON() {
    return { statusCode: this.statusCode, error: this.error, message: this.message };
  }
}

export const badRequest = (message: string) => new HttpError(400, message);
export const unauthorized = (message: string) => new HttpError(401, message);
export const forbidden = (message: string) => new HttpError(403, message);
export const notFound = (message: string) => new HttpError(404, message);
export const conflict = (message: string) => new HttpError(409, message);
export const unprocessable = (message: string) => new HttpError(422, message);
export const unavailable = (message: string) => new HttpError(503, message);
