import { SignJWT, jwtVerify } from 'jose';

export type TokenKind = 'access' | 'refresh';

export interface TokenClaims {
  userId: number;
  kind: TokenKind;
  /** the user's token_version when the token was issued; a logout bumps it */
  version: number;
}

/** HS256 JWTs with a pinned algorithm, a required `exp` and a checked `iss`. */
export class TokenService {
  private readonly key: Uint8Array;

  constructor(secret: string, private readonly issuer: string, private readonly ttl: Record<TokenKind, number>) {
    this.key = new TextEncoder().encode(secret);
  }

  sign(claims: TokenClaims & { userName: string; role: string }): Promise<string> {
    return new SignJWT({ typ: claims.kind, ver: claims.version, name: claims.userName, role: claims.role })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(String(claims.userId))
      .setIssuer(this.issuer)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.ttl[claims.kind])
      .sign(this.key);
  }

  /** @returns the claims, or null for any invalid, expired, forged or unsigned token */
  async verify(token: string, kind: TokenKind): Promise<TokenClaims | null> {
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], issuer: this.issuer, requiredClaims: ['exp', 'sub'] });
      const userId = Number(payload.sub);
      if (payload.typ !== kind || !Number.isSafeInteger(userId) || typeof payload.ver !== 'number') return null;
      return { userId, kind, version: payload.ver };
    } catch {
      return null;
    }
  }
}
