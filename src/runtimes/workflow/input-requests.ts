/**
 * What a waiting run asks of the user, and the checks on the answer. The request is built when the
 * node runs and kept in the run state (`pending`), so an answer that arrives after a restart is
 * checked against exactly what the user was shown.
 */
import { AppError, type FieldError } from '../../domain/errors.ts';
import { isRecord, type JsonValue } from '../../domain/types.ts';
import type { AnswerSchema, InputItem, InputSchema } from '../../domain/workflow.ts';
import type { FormField } from './workflow-graph.ts';

export function dialogSchema(prompt: string): InputSchema {
  return {
    input_type: 'dialog_input',
    tab: 'dialog_input',
    value: [{ key: 'user_input', type: 'dialog', label: prompt, value: prompt, required: true, multiple: false, options: [] }],
  };
}

export function formSchema(fields: FormField[]): InputSchema {
  return {
    input_type: 'form_input',
    tab: 'form_input',
    value: fields.map((f) => ({
      key: f.key, type: f.type, label: f.label, value: f.label, required: f.required === true, multiple: f.multiple === true, options: f.options ?? [],
    })),
  };
}

const blank = (v: unknown) => v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0);
const isString = (v: unknown): v is string => typeof v === 'string';

/**
 * Checks an answer and returns the variables it sets. @throws AppError `invalid_request` (10400)
 * listing every problem (`data.errors`, paths relative to the answer's `data`); the run keeps
 * waiting.
 */
export function checkAnswer(schema: AnswerSchema, data: unknown): Record<string, JsonValue> {
  if (!isRecord(data)) throw AppError.invalid([{ path: 'data', message: 'must be an object' }], 'The answer must be an object');
  const errors: FieldError[] = [];
  const out: Record<string, JsonValue> = {};
  const fail = (key: string, message: string) => errors.push({ path: `data/${key}`, message });

  switch (schema.kind) {
    case 'dialog': {
      const { user_input: text, dialog_files_content: files } = data;
      if (!isString(text)) fail('user_input', 'is required and must be a string');
      if (files !== undefined && !(Array.isArray(files) && files.every(isString))) fail('dialog_files_content', 'must be an array of strings (file urls)');
      out.user_input = isString(text) ? text : '';
      out.dialog_files_content = Array.isArray(files) ? files.filter(isString) : [];
      break;
    }
    case 'form': {
      const items = schema.input_schema.value;
      for (const key of Object.keys(data)) if (!items.some((i) => i.key === key)) fail(key, 'is not a field of this form');
      for (const item of items) {
        const value = data[item.key];
        if (blank(value)) {
          if (item.required) fail(item.key, `is required (${item.label || item.key})`);
          out[item.key] = item.multiple ? [] : item.type === 'number' ? null : '';
          continue;
        }
        const checked = checkField(item, value);
        if (typeof checked === 'string') fail(item.key, checked);
        else out[item.key] = checked.value;
      }
      break;
    }
    case 'choose': {
      const choice = data.output_result;
      if (!isString(choice) || !schema.options.includes(choice)) fail('output_result', `must be one of: ${schema.options.join(', ')}`);
      else out.output_result = choice;
      break;
    }
    case 'edit': {
      const text = data.output_result;
      if (!isString(text)) fail('output_result', 'is required and must be a string');
      else out.output_result = text;
      break;
    }
  }
  if (errors.length) throw AppError.invalid(errors, `The answer has ${errors.length} problem(s)`);
  return out;
}

/** @returns the value to store, or what is wrong */
function checkField(item: InputItem, value: unknown): { value: JsonValue } | string {
  // the validator allows `multiple` on select and file fields only
  if (item.multiple && !Array.isArray(value)) return 'must be an array';
  const list = item.multiple ? (value as unknown[]) : [value];
  switch (item.type) {
    case 'number': {
      const n = typeof value === 'number' ? value : isString(value) && value.trim() !== '' ? Number(value) : NaN;
      return Number.isFinite(n) ? { value: n } : 'must be a number';
    }
    case 'select': {
      const bad = list.filter((v) => !isString(v) || !item.options.includes(v));
      if (bad.length) return `must be ${item.multiple ? 'a list of' : 'one of'}: ${item.options.join(', ')}`;
      return { value: item.multiple ? (list as string[]) : (list[0] as string) };
    }
    case 'file':
      if (!list.every(isString)) return item.multiple ? 'must be an array of file urls' : 'must be a file url (string)';
      return { value: item.multiple ? (list as string[]) : (list[0] as string) };
    default:
      return isString(value) ? { value } : 'must be a string';
  }
}

/**
 * The text of the `question` row the chat core stores for an answer: the client's `message` if it
 * sent one, else the user's text (dialog), one `label: value` line per field (form), or the choice.
 */
export function answerText(schema: AnswerSchema, values: Record<string, JsonValue>, message?: string): string {
  if (message) return message;
  const show = (v: JsonValue | undefined) => (Array.isArray(v) ? v.join(', ') : v === null || v === undefined ? '' : String(v));
  switch (schema.kind) {
    case 'dialog':
      return show(values.user_input);
    case 'form':
      return schema.input_schema.value.map((i) => `${i.label || i.key}: ${show(values[i.key])}`).join('\n');
    default:
      return show(values.output_result);
  }
}
