import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/domain/errors.ts';
import { answerText, checkAnswer, dialogSchema, formSchema } from '../../src/runtimes/workflow/input-requests.ts';
import { references, render, resolve, type Variables } from '../../src/runtimes/workflow/template.ts';

const vars: Variables = {
  ask: { topic: 'tea', n: 3, ok: true, none: null, tags: ['a', 'b'], obj: { deep: { x: 1 } } },
  'node-2': { out: 'dash' },
};

describe('templates', () => {
  it('finds references in both spellings, with paths', () => {
    expect(references('{{ask.topic}} {{#node-2.out#}} {{ ask.obj.deep.x }} {{nope}} {ask.topic}')).toEqual([
      { text: '{{ask.topic}}', node: 'ask', key: 'topic', path: [] },
      { text: '{{#node-2.out#}}', node: 'node-2', key: 'out', path: [] },
      { text: '{{ ask.obj.deep.x }}', node: 'ask', key: 'obj', path: ['deep', 'x'] },
    ]);
  });

  it('renders values as text: objects as JSON, null as empty', () => {
    expect(render('{{ask.topic}}/{{ask.n}}/{{ask.ok}}/[{{ask.none}}]/{{ask.tags}}/{{ask.obj}}/{{ask.obj.deep.x}}/{{ask.tags.1}}/{{#node-2.out#}}', vars))
      .toBe('tea/3/true/[]/["a","b"]/{"deep":{"x":1}}/1/b/dash');
    expect(render('no references, {{ not one }}', vars)).toBe('no references, {{ not one }}');
  });

  it('a missing variable is 10531, naming every one; prototypes are never reached', () => {
    const err = (() => {
      try {
        render('{{ask.topic}} {{ask.color}} {{ghost.x}} {{ask.tags.5}} {{ask.constructor}} {{ask.obj.__proto__}} {{ask.color}}', vars);
      } catch (e) {
        return e;
      }
    })() as AppError;
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('workflow_node_invalid');
    expect(err.message).toBe('unknown variables {{ask.color}}, {{ghost.x}}, {{ask.tags.5}}, {{ask.constructor}}, {{ask.obj.__proto__}}');
  });

  it('resolves JSON values: a lone reference keeps its type, other strings are rendered, deep', () => {
    expect(resolve({ n: '{{ask.n}}', tags: ' {{ask.tags}} ', text: 'n={{ask.n}}', list: ['{{ask.ok}}', 2, null], nested: { o: '{{ask.obj.deep}}' } }, vars))
      .toEqual({ n: 3, tags: ['a', 'b'], text: 'n=3', list: [true, 2, null], nested: { o: { x: 1 } } });
    expect(() => resolve({ a: '{{ask.zz}}', b: 'x {{ghost.y}}' }, vars)).toThrow('unknown variables {{ask.zz}}, {{ghost.y}}');
  });
});

describe('answers', () => {
  const form = { kind: 'form' as const, input_schema: formSchema([{ key: 'topic', type: 'text', label: 'Topic', required: true }, { key: 'tags', type: 'select', label: 'Tags', options: ['x', 'y'], multiple: true }]) };

  it('gives the text of the question row', () => {
    expect(answerText(form, checkAnswer(form, { topic: 'tea', tags: ['x', 'y'] }))).toBe('Topic: tea\nTags: x, y');
    expect(answerText(form, {}, 'typed by the client')).toBe('typed by the client');
    const dialog = { kind: 'dialog' as const, input_schema: dialogSchema('Ask') };
    expect(answerText(dialog, checkAnswer(dialog, { user_input: 'hi' }))).toBe('hi');
    expect(answerText({ kind: 'choose', options: ['a'] }, { output_result: 'a' })).toBe('a');
  });

  it('lists every problem of an answer', () => {
    try {
      checkAnswer(form, { tags: 'x', extra: 1 });
      expect.unreachable();
    } catch (err) {
      expect((err as AppError).data).toEqual({ errors: [
        { path: 'data/extra', message: 'is not a field of this form' },
        { path: 'data/topic', message: 'is required (Topic)' },
        { path: 'data/tags', message: 'must be an array' },
      ] });
    }
  });
});
