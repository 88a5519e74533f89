import { createHash, randomBytes } from 'node:crypto';
import { AppError } from '../domain/errors.ts';
import type { Principal } from '../domain/types.ts';
import type { Repos } from '../storage/repos.ts';
import type { ApiKeyRow, UserRow } from '../storage/tables.ts';
import { generatePassword, hashPassword, verifyPassword } from './passwords.ts';
import type { TokenService } from './tokens.ts';

export interface PublicUser {
  user_id: number;
  user_name: string;
  role: 'admin' | 'user';
  create_time: string;
}

export const presentUser = (u: UserRow): PublicUser => ({ user_id: u.id, user_name: u.user_name, role: u.role, create_time: u.create_time });

export interface LoginResult {
  access_token: string;
  refresh_token: string;
  user: PublicUser;
}

export const API_KEY_PREFIX = 'pk-';
const hashKey = (secret: string) => createHash('sha256').update(secret).digest('hex');

export class AuthService {
  constructor(private readonly repos: Repos, private readonly tokens: TokenService) {}

  private async issue(user: UserRow): Promise<LoginResult> {
    const base = { userId: user.id, version: user.token_version, userName: user.user_name, role: user.role };
    return {
      access_token: await this.tokens.sign({ ...base, kind: 'access' }),
      refresh_token: await this.tokens.sign({ ...base, kind: 'refresh' }),
      user: presentUser(user),
    };
  }

  async login(userName: string, password: string): Promise<LoginResult> {
    const user = await this.repos.users.findByName(userName);
    // verify against a dummy hash when the user is missing so timing does not reveal user names
    const ok = await verifyPassword(password, user?.password_hash ?? DUMMY_HASH);
    if (!user || !ok) throw new AppError('unauthorized', 'Wrong user name or password');
    return this.issue(user);
  }

  async refresh(refreshToken: string): Promise<LoginResult> {
    const user = await this.userFromToken(refreshToken, 'refresh');
    if (!user) throw new AppError('unauthorized', 'Invalid or expired refresh token');
    return this.issue(user);
  }

  async logout(userId: number): Promise<void> {
    await this.repos.users.bumpTokenVersion(userId);
  }

  private async userFromToken(token: string, kind: 'access' | 'refresh'): Promise<UserRow | null> {
    const claims = await this.tokens.verify(token, kind);
    if (!claims) return null;
    const user = await this.repos.users.findById(claims.userId);
    if (!user || user.token_version !== claims.version) return null;
    return user;
  }

  /** @returns the principal of a valid access token, else null */
  async authenticate(token: string): Promise<Principal | null> {
    const user = await this.userFromToken(token, 'access');
    return user ? { id: user.id, user_name: user.user_name, role: user.role } : null;
  }

  /** @returns the principal of a valid, unrevoked API key, else null */
  async authenticateApiKey(secret: string): Promise<Principal | null> {
    if (!secret.startsWith(API_KEY_PREFIX)) return null;
    const key = await this.repos.apiKeys.findActiveByHash(hashKey(secret));
    if (!key) return null;
    const user = await this.repos.users.findById(key.user_id);
    if (!user) return null;
    // last_used_time says when a key was last used, to the minute: not a write per request
    if (key.last_used_time === null || Date.parse(key.last_used_time) <= Date.now() - 60_000) await this.repos.apiKeys.touch(key.id);
    return { id: user.id, user_name: user.user_name, role: user.role, apiKey: { id: key.id, appIds: parseAppIds(key) } };
  }

  async createUser(userName: string, password: string, role: 'admin' | 'user'): Promise<UserRow> {
    if (await this.repos.users.findByName(userName)) {
      throw AppError.invalid([{ path: '/user_name', message: 'already taken' }], 'User name already taken');
    }
    return this.repos.users.create({ user_name: userName, password_hash: await hashPassword(password), role });
  }

  /** Creates the `admin` account when there is no user yet. @returns the password when one was generated or set */
  async bootstrapAdmin(password: string): Promise<{ created: boolean; password: string; generated: boolean }> {
    if ((await this.repos.users.count()) > 0) return { created: false, password: '', generated: false };
    const pw = password || generatePassword();
    try {
      await this.createUser('admin', pw, 'admin');
    } catch (err) {
      // another instance bootstrapped it at the same moment
      if (await this.repos.users.findByName('admin')) return { created: false, password: '', generated: false };
      throw err;
    }
    return { created: true, password: pw, generated: !password };
  }

  async createApiKey(userId: number, name: string, appIds: string[] | null): Promise<{ row: ApiKeyRow; secret: string }> {
    const secret = API_KEY_PREFIX + randomBytes(24).toString('base64url');
    const row = await this.repos.apiKeys.create({ user_id: userId, name, key_hash: hashKey(secret), key_prefix: secret.slice(0, 10), app_ids: appIds });
    return { row, secret };
  }
}

export function parseAppIds(key: ApiKeyRow): string[] | null {
  return key.app_ids === null ? null : (JSON.parse(key.app_ids) as string[]);
}

export const presentApiKey = (k: ApiKeyRow) => ({
  id: k.id, name: k.name, key_prefix: k.key_prefix, app_ids: parseAppIds(k), last_used_time: k.last_used_time, create_time: k.create_time,
});

const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
