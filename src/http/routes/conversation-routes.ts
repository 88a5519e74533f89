import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { toMarkdown } from '../../chat/export.ts';
import { NAME_MAX } from '../../chat/conversation-service.ts';
import type { Principal } from '../../domain/types.ts';
import type { App } from '../app.ts';
import { ok } from '../envelope.ts';
import { presentChatListItem, presentConversation, presentMessage } from '../presenters.ts';
import type { Services } from '../services.ts';
import { ChatListItemSchema, ConversationSchema, Envelope, HexId, IntId, ListOf, MessageSchema, PageQuery } from '../schemas.ts';

/**
 * Hand-written messages (insert, edit) may be longer than a chat question (chat.max_message_length):
 * they carry whole answers. Over the cap answers 10400 like any other field limit.
 */
const MAX_STORED_MESSAGE = 100_000;

const tags = ['conversations'];
const Name = Type.String({ minLength: 1, maxLength: NAME_MAX, pattern: '\\S', description: 'not blank' });
const MessageText = Type.String({ maxLength: MAX_STORED_MESSAGE });
const ChatIdParams = Type.Object({ chat_id: HexId });
const MessageIdParams = Type.Object({ message_id: IntId });
const HistoryQuery = Type.Object({
  chat_id: HexId,
  flow_id: Type.Optional(HexId),
  id: Type.Optional(IntId),
  page_size: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
});
const ListFilters = {
  ...PageQuery,
  keyword: Type.Optional(Type.String({ maxLength: 256, description: 'matches titles and message text' })),
};
const ok200 = <T extends TSchema>(data: T) => ({ 200: Envelope(data) });

/** `id` is the cursor: the last message id the client has seen; older messages follow. */
const historyQuery = (q: Static<typeof HistoryQuery>) => ({ chatId: q.chat_id, flowId: q.flow_id, cursor: q.id, pageSize: q.page_size });

export function registerConversationRoutes(app: App, { conversations, turns }: Services): void {
  app.get('/api/v1/chat/list', {
    schema: {
      tags, summary: "The caller's conversations, newest update first, each with latest_message (data is a plain array, as Bisheng)",
      querystring: Type.Object({
        ...ListFilters,
        flow_type: Type.Optional(Type.Array(Type.String({ pattern: '^\\d{1,4}(,\\d{1,4})*$' }), { maxItems: 20, description: 'repeated or comma-separated: 5 assistant, 10 workflow, 15 chat' })),
      }),
      response: ok200(Type.Array(ChatListItemSchema)),
    },
  }, async (req) => {
    const { page, limit, keyword, flow_type } = req.query;
    const flowTypes = flow_type?.flatMap((v) => v.split(',').map(Number));
    const { list } = await conversations.list(req.principal!, { page, limit, keyword, flowTypes });
    return ok(list.map((i) => presentChatListItem(i.conversation, i.latest)));
  });

  app.get('/api/v1/chat/session/list', {
    schema: {
      tags, summary: "The caller's conversations as {list, total}",
      querystring: Type.Object({ ...ListFilters, flow_id: Type.Optional(HexId) }),
      response: ok200(ListOf(ChatListItemSchema)),
    },
  }, async (req) => {
    const { page, limit, keyword, flow_id } = req.query;
    const { list, total } = await conversations.list(req.principal!, { page, limit, keyword, flowId: flow_id });
    return ok({ list: list.map((i) => presentChatListItem(i.conversation, i.latest)), total });
  });

  for (const url of ['/api/v1/chat/history', '/api/v1/chat/message/history']) {
    app.get(url, {
      schema: {
        tags, summary: 'A page of messages, newest first (plain array); a foreign, missing or other-app conversation answers 10404',
        querystring: HistoryQuery, response: ok200(Type.Array(MessageSchema)),
      },
    }, async (req) => ok((await conversations.history(req.principal!, historyQuery(req.query))).map(presentMessage)));
  }

  app.get('/api/v1/session/chat/history', {
    schema: {
      tags, summary: 'History of any conversation, soft-deleted ones included (admin review)',
      querystring: HistoryQuery, response: ok200(Type.Array(MessageSchema)),
    },
  }, async (req) => ok((await conversations.history(req.principal!, historyQuery(req.query), { review: true })).map(presentMessage)));

  app.get('/api/v1/session/chat/messages/:conversationId', {
    schema: {
      tags, summary: 'Up to 1000 latest messages, oldest first',
      params: Type.Object({ conversationId: HexId }), response: ok200(Type.Array(MessageSchema)),
    },
  }, async (req) => ok((await conversations.latest(req.principal!, req.params.conversationId)).map(presentMessage)));

  const info = async (p: Principal, chatId: string) => ok(presentConversation(await conversations.load(p, chatId, 'read')));
  app.get('/api/v1/chat/info', {
    schema: { tags, summary: 'One conversation', querystring: ChatIdParams, response: ok200(ConversationSchema) },
  }, async (req) => info(req.principal!, req.query.chat_id));
  app.get('/api/v1/chat/session/:chat_id', {
    schema: { tags, summary: 'One conversation', params: ChatIdParams, response: ok200(ConversationSchema) },
  }, async (req) => info(req.principal!, req.params.chat_id));

  app.get('/api/v1/chat/:chat_id/export', {
    schema: {
      tags,
      summary: 'Download one conversation (JSON: {conversation, messages oldest first}; md: a Markdown transcript)',
      description: 'Answers a file (content-disposition: attachment), not the envelope, so the download is the document itself; errors still use the envelope.',
      params: ChatIdParams,
      querystring: Type.Object({ format: Type.Union([Type.Literal('json'), Type.Literal('md')], { default: 'json' }) }),
      response: {
        200: {
          description: 'the conversation file',
          content: {
            'application/json': { schema: Type.Object({ conversation: ConversationSchema, messages: Type.Array(MessageSchema) }) },
            'text/markdown': { schema: Type.String() },
          },
        },
      },
    },
  }, async (req, reply) => {
    const { conversation, messages } = await conversations.transcript(req.principal!, req.params.chat_id);
    const md = req.query.format === 'md';
    reply.header('content-disposition', `attachment; filename="conversation-${conversation.chat_id}.${md ? 'md' : 'json'}"`);
    if (md) return reply.type('text/markdown; charset=utf-8').send(toMarkdown(conversation, messages));
    return reply.type('application/json; charset=utf-8').send({ conversation: presentConversation(conversation), messages: messages.map(presentMessage) });
  });

  app.post('/api/v1/chat/conversation/rename', {
    schema: { tags, summary: 'Rename a conversation', body: Type.Object({ conversationId: HexId, name: Name }), response: ok200(Type.Null()) },
  }, async (req) => {
    await conversations.rename(req.principal!, req.body.conversationId, req.body.name);
    return ok(null);
  });
  app.put('/api/v1/chat/session/:chat_id', {
    schema: { tags, summary: 'Rename a conversation', params: ChatIdParams, body: Type.Object({ name: Name }), response: ok200(Type.Null()) },
  }, async (req) => {
    await conversations.rename(req.principal!, req.params.chat_id, req.body.name);
    return ok(null);
  });

  app.post('/api/v1/chat/conversation/copy', {
    schema: { tags, summary: 'Copy a conversation with its messages under a new chat_id', body: Type.Object({ conversationId: HexId }), response: ok200(ConversationSchema) },
  }, async (req) => ok(presentConversation(await conversations.copy(req.principal!, req.body.conversationId))));

  for (const url of ['/api/v1/chat/:chat_id', '/api/v1/chat/session/:chat_id']) {
    app.delete(url, {
      schema: { tags, summary: 'Soft delete (audit-logged); stops a running turn first; messages are kept', params: ChatIdParams, response: ok200(Type.Null()) },
    }, async (req) => {
      await conversations.remove(req.principal!, req.params.chat_id, turns, req.ip);
      return ok(null);
    });
  }

  app.post('/api/v1/chat/session/create', {
    schema: {
      tags, summary: 'Create a conversation; a chat_id that is already taken answers 10409',
      body: Type.Object({ flow_id: HexId, chat_id: Type.Optional(HexId), name: Type.Optional(Name) }),
      response: ok200(ConversationSchema),
    },
  }, async (req) => ok(presentConversation(await conversations.create(req.principal!, { flowId: req.body.flow_id, chatId: req.body.chat_id, name: req.body.name }, req.ip))));

  app.post('/api/v1/chat/message', {
    schema: {
      tags, summary: 'Insert a question/answer pair by hand; creates the conversation if missing; data = the two stored rows',
      body: Type.Object({ flow_id: HexId, chat_id: HexId, human_message: MessageText, answer_message: MessageText }),
      response: ok200(Type.Array(MessageSchema)),
    },
  }, async (req) => {
    const { flow_id, chat_id, human_message, answer_message } = req.body;
    const rows = await conversations.insertPair(req.principal!, { flowId: flow_id, chatId: chat_id, question: human_message, answer: answer_message }, req.ip);
    return ok(rows.map(presentMessage));
  });

  app.put('/api/v1/chat/message/:message_id', {
    schema: {
      tags, summary: 'Edit a message (owner only)',
      params: MessageIdParams,
      body: Type.Object({ message: MessageText, category: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })) }),
      response: ok200(MessageSchema),
    },
  }, async (req) => ok(presentMessage(await conversations.editMessage(req.principal!, req.params.message_id, req.body, req.ip))));

  app.delete('/api/v1/chat/message/:message_id', {
    schema: { tags, summary: 'Delete a message (owner only, permanent)', params: MessageIdParams, response: ok200(Type.Null()) },
  }, async (req) => {
    await conversations.deleteMessage(req.principal!, req.params.message_id, req.ip);
    return ok(null);
  });
  app.delete('/api/v1/chat/message/delete', {
    schema: { tags, summary: 'Delete a message (owner only, permanent)', querystring: MessageIdParams, response: ok200(Type.Null()) },
  }, async (req) => {
    await conversations.deleteMessage(req.principal!, req.query.message_id, req.ip);
    return ok(null);
  });

  app.post('/api/v1/chat/interrupt', {
    schema: { tags, summary: 'Stop the running turn of a conversation, wherever it runs', body: Type.Object({ chat_id: HexId }), response: ok200(Type.Object({ stopped: Type.Boolean() })) },
  }, async (req) => ok({ stopped: await conversations.interrupt(req.principal!, req.body.chat_id, turns) }));
}
