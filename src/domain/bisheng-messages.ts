import type { NodeRun, WorkflowEventBody } from './events.ts';
import type { JsonValue } from './types.ts';

/** A workflow event as Bisheng's message schema says it (PROTOCOL.md §3.2). */
export interface BishengMessage {
  category: string;
  type: string;
  message: Record<string, JsonValue>;
}

const ids = (n: NodeRun) => ({ unique_id: n.runId, node_id: n.nodeId, name: n.name });

/**
 * The category, type and message of a workflow event. The history stores what the frames carry,
 * so the message rows of a run (chat/message-rows.ts) and its frames (wire/bisheng-frames.ts)
 * share this one shape.
 */
export function workflowMessage(body: WorkflowEventBody): BishengMessage {
  switch (body.kind) {
    case 'node_start':
      return { category: 'node_run', type: 'start', message: { ...ids(body.node), node_type: body.nodeType } };
    case 'node_end':
      return {
        category: 'node_run', type: 'end',
        message: {
          ...ids(body.node), node_type: body.nodeType, input_data: body.input,
          // `log_data` is Bisheng's name for what a node did; Parley's clients read `output`
          output: body.output, log_data: body.output, duration_ms: body.durationMs, ...(body.reason !== undefined && { reason: body.reason }),
        },
      };
    case 'guide_word':
      return { category: 'guide_word', type: 'over', message: { ...ids(body.node), guide_word: body.text } };
    case 'guide_questions':
      return { category: 'guide_question', type: 'over', message: { ...ids(body.node), guide_question: body.questions } };
    case 'node_delta':
      return { category: 'stream_msg', type: 'stream', message: { ...ids(body.node), msg: body.content, reasoning_content: body.reasoning, output_key: body.outputKey } };
    case 'node_answer':
      return {
        category: 'stream_msg', type: 'end',
        message: { ...ids(body.node), msg: body.content, reasoning_content: body.reasoning, output_key: body.outputKey, ...(body.interrupted && { interrupted: true }) },
      };
    case 'output':
      return { category: 'output_msg', type: 'over', message: { ...ids(body.node), msg: body.text, output_key: '' } };
    case 'input_request': {
      const { schema } = body;
      const shown = { ...ids(body.node), msg: body.text };
      switch (schema.kind) {
        case 'dialog':
        case 'form':
          return { category: 'input', type: 'over', message: { ...shown, input_schema: schema.input_schema } };
        case 'choose':
          return { category: 'output_with_choose_msg', type: 'over', message: { ...shown, output_key: '', key: 'output_result', options: schema.options } };
        case 'edit':
          return { category: 'output_with_input_msg', type: 'over', message: { ...shown, output_key: '', key: 'output_result', input_msg: schema.input_msg } };
      }
    }
  }
}
