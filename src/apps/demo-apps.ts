import type { AppKind, AppSpec } from '../domain/types.ts';

/** The apps seeded on first start so a new user can try every kind at once (PROTOCOL.md §7). */
export const DEMO_APPS: Array<{ name: string; kind: AppKind; description: string; spec: AppSpec }> = [
  {
    name: 'Demo chat',
    kind: 'chat',
    description: 'A plain chat app on the default provider (the offline demo model unless configured).',
    spec: {
      model: { provider: 'default' },
      prompt: 'You are a helpful assistant.',
      guide_word: 'Hello! Ask me anything.',
      guide_questions: ['What can you do?', 'Tell me a short story.'],
      tools: [],
    },
  },
  {
    name: 'Demo assistant',
    kind: 'assistant',
    description: 'An assistant with tools: a calculator and the current time.',
    spec: {
      model: { provider: 'default' },
      prompt: 'You are a helpful assistant. Use the tools when they help.',
      guide_word: 'I can calculate and tell the time.',
      guide_questions: ['What is 12 * (3 + 4)?', 'What time is it?'],
      tools: ['calculator', 'current_time'],
      max_steps: 5,
    },
  },
  {
    name: 'Demo workflow',
    kind: 'workflow',
    description: 'Asks for a topic in a form, writes about it, and lets you choose what to do next.',
    spec: {
      model: { provider: 'default' },
      prompt: '',
      guide_word: 'Welcome to the demo workflow.',
      guide_questions: [],
      tools: [],
      graph: {
        nodes: [
          { id: 'start', type: 'start', data: { name: 'Start', guide_word: 'Welcome to the demo workflow.', guide_questions: ['Try a long note about tea.'] } },
          {
            id: 'ask', type: 'input', data: {
              name: 'Topic', mode: 'form', prompt: 'What should I write about?',
              fields: [{ key: 'topic', type: 'text', label: 'Topic', required: true }, { key: 'length', type: 'select', label: 'Length', options: ['short', 'long'], required: true }],
            },
          },
          { id: 'write', type: 'llm', data: { name: 'Write', system_prompt: 'You write clear, friendly notes.', prompt: 'Write a {{ask.length}} note about {{ask.topic}}.' } },
          { id: 'check', type: 'condition', data: { name: 'Long note?', cases: [{ id: 'long', when: { left: '{{ask.length}}', op: 'eq', right: 'long' } }] } },
          { id: 'choose', type: 'output', data: { name: 'Next step', message: 'That was a long note about {{ask.topic}}. What next?', options: ['Again', 'Finish'] } },
          { id: 'short_note', type: 'output', data: { name: 'Done', message: 'A short note about {{ask.topic}} was written.' } },
          { id: 'end', type: 'end', data: {} },
        ],
        edges: [
          { source: 'start', target: 'ask' },
          { source: 'ask', target: 'write' },
          { source: 'write', target: 'check' },
          { source: 'check', target: 'choose', sourceHandle: 'long' },
          { source: 'check', target: 'short_note', sourceHandle: 'else' },
          { source: 'choose', target: 'end' },
          { source: 'short_note', target: 'end' },
        ],
      },
    },
  },
];
