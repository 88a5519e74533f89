/**
 * What a workflow run asks of its user (the request a waiting run keeps), in Bisheng's shapes: the
 * request is stored, streamed and answered as Bisheng's client knows it.
 */
/** `dialog`/`form`: an input node; `choose`/`edit`: an output node that asks (answer key `output_result`). */
export type InputKind = 'dialog' | 'form' | 'choose' | 'edit';

/** One item of Bisheng's `input_schema.value`; `value` is the label (Bisheng words it so). */
export type InputItem = {
  key: string;
  type: 'text' | 'number' | 'select' | 'file' | 'dialog';
  label: string;
  value: string;
  required: boolean;
  multiple: boolean;
  options: string[];
};

/** Bisheng's `input_schema`. Type aliases, not interfaces, so they count as JSON values. */
export type InputSchema = {
  input_type: 'dialog_input' | 'form_input';
  /** Bisheng's name for input_type */
  tab: 'dialog_input' | 'form_input';
  value: InputItem[];
};

/** What an answer is checked against. */
export type AnswerSchema =
  | { kind: 'dialog'; input_schema: InputSchema }
  | { kind: 'form'; input_schema: InputSchema }
  | { kind: 'choose'; options: string[] }
  | { kind: 'edit'; input_msg: string };

