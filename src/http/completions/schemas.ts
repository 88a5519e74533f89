import { Type, type Static } from '@sinclair/typebox';
import { Nullable } from '../schemas.ts';

/** The wire schemas the completion APIs (OpenAI- and Astron-compatible) share. */

const TextPart = Type.Object({ type: Type.Literal('text'), text: Type.String() }, { additionalProperties: true });
const MessageContent = Nullable(Type.Union([Type.String(), Type.Array(TextPart, { description: 'text parts only' })]));
const ToolCallIn = Type.Object({
  id: Type.String({ maxLength: 256 }),
  type: Type.Optional(Type.Literal('function')),
  function: Type.Object({ name: Type.String({ maxLength: 256 }), arguments: Type.String() }, { additionalProperties: true }),
}, { additionalProperties: true });
export const ChatMessageIn = Type.Object({
  role: Type.Union([Type.Literal('system'), Type.Literal('developer'), Type.Literal('user'), Type.Literal('assistant'), Type.Literal('tool')]),
  content: Type.Optional(MessageContent),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  tool_calls: Type.Optional(Nullable(Type.Array(ToolCallIn))),
  tool_call_id: Type.Optional(Type.String({ maxLength: 256 })),
}, { additionalProperties: true });
export type ChatMessageIn = Static<typeof ChatMessageIn>;

const Usage = Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer(), total_tokens: Type.Integer() });
const ToolCallOut = Type.Object({
  id: Type.String(), type: Type.Literal('function'),
  function: Type.Object({ name: Type.String(), arguments: Type.String() }),
});
export type ToolCallOut = Static<typeof ToolCallOut>;

/** [parley] what a waiting workflow run asks for; the next request with the same chat id answers it */
export const InputRequestSchema = Type.Object({
  node_id: Type.String(),
  kind: Type.Union([Type.Literal('dialog'), Type.Literal('form'), Type.Literal('choose'), Type.Literal('edit')]),
  message_id: Nullable(Type.Union([Type.Integer(), Type.String()], { description: 'the stored request message' })),
  input_schema: Type.Optional(Type.Unknown({ description: "dialog and form: Bisheng's input_schema ({input_type, value: [{key, type, label, required, options}]})" })),
  options: Type.Optional(Type.Array(Type.String(), { description: 'choose: answer with one of them' })),
  input_msg: Type.Optional(Type.String({ description: 'edit: the text to edit' })),
}, { description: '[parley] the input request a workflow run waits for' });
export type InputRequest = Static<typeof InputRequestSchema>;

export const ChatCompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('chat.completion'),
  created: Type.Integer(),
  model: Type.String(),
  system_fingerprint: Type.Null(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal('assistant'),
      content: Nullable(Type.String()),
      refusal: Type.Null(),
      reasoning_content: Type.Optional(Type.String()),
      tool_calls: Type.Optional(Type.Array(ToolCallOut, { description: 'informational: run on the server' })),
    }),
    logprobs: Type.Null(),
    finish_reason: Type.Union([Type.Literal('stop'), Type.Literal('length')]),
  })),
  usage: Usage,
  parley_input_request: Type.Optional(InputRequestSchema),
}, { additionalProperties: true });
export type ChatCompletion = Static<typeof ChatCompletionSchema>;
