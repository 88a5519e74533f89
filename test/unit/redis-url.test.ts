import { describe, expect, it } from 'vitest';
import { parseRedisUrl } from '../../src/redis/connect.ts';

describe('server.redis_url', () => {
  it('names one server, a Sentinel-managed primary or a Cluster', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379/2')).toEqual({ kind: 'standalone', url: 'redis://127.0.0.1:6379/2', options: {} });
    expect(parseRedisUrl('rediss://user:pw@cache.example:6380')).toMatchObject({ kind: 'standalone' });
    expect(parseRedisUrl('redis+sentinel://:s%40cret@s1:26379,s2,s3:26380/mymaster/3')).toEqual({
      kind: 'sentinel', name: 'mymaster',
      nodes: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }, { host: 's3', port: 26380 }],
      options: { password: 's@cret', db: 3 },
    });
    expect(parseRedisUrl('redis+cluster://admin:pw@n1:7000,n2:7001')).toEqual({
      kind: 'cluster', nodes: [{ host: 'n1', port: 7000 }, { host: 'n2', port: 7001 }], options: { username: 'admin', password: 'pw' },
    });
  });

  it('refuses what it cannot connect to, without printing the password', () => {
    expect(() => parseRedisUrl('redis+sentinel://s1:26379')).toThrow(/names the primary/);
    expect(() => parseRedisUrl('http://user:secret@h')).toThrow(/not a Redis URL/);
    expect(() => parseRedisUrl('http://user:secret@h')).not.toThrow(/secret/);
  });
});
