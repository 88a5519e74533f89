import { Type } from '@sinclair/typebox';
import type { App } from '../app.ts';
import { ok } from '../envelope.ts';
import { presentAudit } from '../presenters.ts';
import type { Services } from '../services.ts';
import { Envelope, HexId, IntId, ListOf, Nullable, PageQuery } from '../schemas.ts';

const Comment = Type.String({ maxLength: 4096 });
const Liked = Type.Union([Type.Literal(0), Type.Literal(1), Type.Literal(2)], { description: '0 none, 1 like, 2 dislike' });
const Day = Type.String({ format: 'date', description: 'YYYY-MM-DD (UTC)' });
const Instant = Type.Union([Type.String({ format: 'date' }), Type.String({ format: 'date-time' })], { description: 'YYYY-MM-DD (UTC midnight) or RFC 3339 date-time' });
const NoData = { 200: Envelope(Type.Null()) };

const StatsTotals = Type.Object({
  conversations: Type.Integer(), messages: Type.Integer(), likes: Type.Integer(), dislikes: Type.Integer(), copies: Type.Integer(), tokens: Type.Integer(),
  avg_latency_ms: Nullable(Type.Integer({ description: 'mean answer latency; null when no message has one' })),
});
const StatsRow = Type.Composite([Type.Object({ flow_id: Type.String(), flow_name: Nullable(Type.String()), day: Type.String({ description: 'YYYY-MM-DD (UTC)' }) }), StatsTotals]);

const AuditSchema = Type.Object({
  id: Type.Integer(), user_id: Nullable(Type.Integer()), action: Type.String(), object_type: Type.String(), object_id: Type.String(),
  detail: Type.Object({}, { additionalProperties: true }), ip: Type.String(), create_time: Type.String(),
});
export function registerFeedbackRoutes(app: App, { feedback }: Services): void {

  for (const url of ['/api/v1/liked', '/api/v1/chat/liked']) {
    app.post(url, {
      schema: {
        tags: ['feedback'], summary: 'Like (1), dislike (2) or clear (0) an answer; conversation counters follow',
        body: Type.Object({ message_id: IntId, liked: Liked, comment: Type.Optional(Comment) }),
        response: NoData,
      },
    }, async (req) => {
      await feedback.setLiked(req.principal!, req.body.message_id, req.body.liked, req.body.comment);
      return ok(null);
    });
  }

  app.post('/api/v1/chat/copied', {
    schema: { tags: ['feedback'], summary: 'Mark a message copied; only the first copy counts', body: Type.Object({ message_id: IntId }), response: NoData },
  }, async (req) => {
    await feedback.markCopied(req.principal!, req.body.message_id);
    return ok(null);
  });

  app.post('/api/v1/chat/comment', {
    schema: { tags: ['feedback'], summary: 'Comment on a message (stored in remark)', body: Type.Object({ message_id: IntId, comment: Comment }), response: NoData },
  }, async (req) => {
    await feedback.comment(req.principal!, req.body.message_id, req.body.comment);
    return ok(null);
  });

  app.post('/api/v1/session/chat/message/telemetry', {
    schema: {
      tags: ['feedback'], summary: 'Record a like/dislike/copy event in the audit log',
      body: Type.Object({ message_id: IntId, operation_type: Type.Union([Type.Literal('like'), Type.Literal('dislike'), Type.Literal('copy')]) }),
      response: NoData,
    },
  }, async (req) => {
    await feedback.telemetry(req.principal!, req.body.message_id, req.body.operation_type, req.ip);
    return ok(null);
  });

  app.get('/api/v1/chat/statistics', {
    schema: {
      tags: ['stats'], summary: "Counts per app and day; users see their own, admins everyone's (or user_id's)",
      querystring: Type.Object({ flow_id: Type.Optional(HexId), user_id: Type.Optional(IntId), start_date: Type.Optional(Day), end_date: Type.Optional(Day) }),
      response: { 200: Envelope(Type.Object({ list: Type.Array(StatsRow), total: StatsTotals })) },
    },
  }, async (req) => {
    const q = req.query;
    return ok(await feedback.statistics(req.principal!, { flowId: q.flow_id, userId: q.user_id, startDate: q.start_date, endDate: q.end_date }));
  });

  app.get('/api/v1/chat/messages/count', {
    schema: {
      tags: ['stats'], summary: 'Count messages; users count only their own (start_time inclusive, end_time exclusive)',
      querystring: Type.Object({ flow_id: Type.Optional(HexId), chat_id: Type.Optional(HexId), user_id: Type.Optional(IntId), start_time: Type.Optional(Instant), end_time: Type.Optional(Instant) }),
      response: { 200: Envelope(Type.Object({ count: Type.Integer() })) },
    },
  }, async (req) => {
    const q = req.query;
    const count = await feedback.countMessages(req.principal!, { flowId: q.flow_id, chatId: q.chat_id, userId: q.user_id, from: q.start_time, to: q.end_time });
    return ok({ count });
  });

  app.get('/api/v1/audit', {
    schema: {
      tags: ['audit'], summary: 'The audit log, newest first (admin)',
      querystring: Type.Object({ ...PageQuery, action: Type.Optional(Type.String({ maxLength: 64 })), user_id: Type.Optional(IntId), object_id: Type.Optional(Type.String({ maxLength: 64 })) }),
      response: { 200: Envelope(ListOf(AuditSchema)) },
    },
  }, async (req) => {
    const q = req.query;
    const { list, total } = await feedback.audit(req.principal!, { page: q.page, limit: q.limit, action: q.action, userId: q.user_id, objectId: q.object_id });
    return ok({ list: list.map(presentAudit), total });
  });
}
