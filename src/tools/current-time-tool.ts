import { AppError } from '../domain/errors.ts';
import type { Tool } from '../domain/llm.ts';

export interface CurrentTimeOptions {
  /** injectable clock (tests) */
  now?: () => Date;
  /** zone used when the model names none */
  defaultTimeZone?: string;
}

/** Long enough for every IANA name ("America/Argentina/ComodRivadavia" is 32). */
const MAX_ZONE_LENGTH = 64;

function formatter(timeZone: string, options: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  try {
    return new Intl.DateTimeFormat('en-US', { ...options, timeZone });
  } catch {
    throw AppError.invalid([{ path: 'timezone', message: 'is not a known IANA time zone' }], `Unknown time zone "${timeZone}" (use an IANA name such as "Europe/Paris" or "UTC")`);
  }
}

/** The wall-clock time in `timeZone` with its offset, e.g. 2024-05-01T14:00:00+02:00. */
function localIso(date: Date, timeZone: string): string {
  const parts = formatter(timeZone, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    hourCycle: 'h23', timeZoneName: 'longOffset',
  }).formatToParts(date);
  const get = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? '';
  // longOffset reads "GMT+02:00", or just "GMT" at offset zero
  const offset = get('timeZoneName').replace(/^GMT/, '') || '+00:00';
  return `${get('year')}-${get('month')}-${get('day')}T${get('hour')}:${get('minute')}:${get('second')}${offset}`;
}

/** Builds the output text: UTC ISO time, the same instant in the zone with its offset, and a readable form. */
export function describeTime(date: Date, timeZone: string): string {
  const readable = formatter(timeZone, { dateStyle: 'full', timeStyle: 'long' }).format(date);
  return [
    `utc: ${date.toISOString()}`,
    `timezone: ${timeZone}`,
    `local: ${localIso(date, timeZone)}`,
    `readable: ${readable}`,
  ].join('\n');
}

export function createCurrentTimeTool(options: CurrentTimeOptions = {}): Tool {
  const now = options.now ?? (() => new Date());
  const defaultZone = options.defaultTimeZone ?? 'UTC';
  return {
    spec: {
      name: 'current_time',
      description: `Returns the current date and time: the UTC ISO timestamp and the local time in an IANA time zone (default ${defaultZone}).`,
      parameters: {
        type: 'object',
        properties: {
          timezone: { type: 'string', maxLength: MAX_ZONE_LENGTH, description: 'IANA time zone, e.g. "Europe/Paris", "Asia/Tokyo", "UTC"' },
        },
        additionalProperties: false,
      },
    },
    async run(args) {
      const zone = args.timezone ?? null;
      if (zone !== null && (typeof zone !== 'string' || zone.length > MAX_ZONE_LENGTH)) {
        throw AppError.invalid([{ path: 'timezone', message: `must be a string of at most ${MAX_ZONE_LENGTH} characters` }], 'current_time: "timezone" must be an IANA time zone name');
      }
      const timeZone = zone === null || zone.trim() === '' ? defaultZone : zone.trim();
      return describeTime(now(), timeZone);
    },
  };
}
