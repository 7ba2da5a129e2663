// Types of warren.js, the Warren WebSocket client (docs/CLIENTS.md). The frames follow
// docs/PROTOCOL.md; fields a newer server adds are passed through untouched.

export declare const SUBPROTOCOL: 'warren.v1';
/** Close codes after which the client stops instead of reconnecting. */
export declare const FINAL_CLOSE_CODES: ReadonlySet<number>;
/** The close code of a token that expired during the connection. */
export declare const TOKEN_EXPIRED: 4401;

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface User {
  id: string;
  name?: string;
}

export interface Limits {
  max_text_bytes: number;
  max_frame_bytes: number;
  sends_per_sec: number;
  burst: number;
}

export interface Welcome {
  type: 'welcome';
  user: User;
  session: string;
  gateway: string;
  limits: Limits;
}

export interface Message {
  type?: 'message';
  room: string;
  id: string;
  seq: number;
  epoch: string;
  from: User & { bot: boolean };
  text: string;
  ts: number;
}

export interface Joined {
  type: 'joined';
  ref?: string;
  room: string;
  epoch: string;
  seq: number;
  history: Message[];
  recovered: boolean;
  members: User[];
  members_total?: number;
  role: string;
  /** This answers the automatic join after a reconnect. */
  rejoin: boolean;
  /** What the application held for the room is void: drop it (new epoch, or not recovered). */
  reset: boolean;
}

export interface Ack {
  type: 'ack';
  ref: string;
  room?: string;
  id?: string;
  seq?: number;
}

export interface History {
  type: 'history';
  ref?: string;
  room: string;
  messages: Message[];
  complete: boolean;
}

export interface Member {
  type: 'member';
  room: string;
  event: 'joined' | 'left';
  user: User;
}

export interface Typing {
  type: 'typing';
  room: string;
  user: User;
}

export interface Presence {
  type: 'presence';
  ref?: string;
  room: string;
  members: User[];
}

export type ModerationAction =
  | 'mute'
  | 'unmute'
  | 'kick'
  | 'ban'
  | 'unban'
  | 'delete'
  | 'grant'
  | 'revoke'
  | 'configure';

/** A change to a room's settings (`configure`): only the fields given change. */
export interface RoomSettings {
  visibility?: 'public' | 'private';
  announce?: boolean;
  history_limit?: number;
  history_on_join?: number;
}

export interface Moderation {
  type: 'moderation';
  room: string;
  action: ModerationAction;
  user?: User;
  msg_id?: string;
  by: User;
  until?: number;
  role?: string;
  /** For `configure`: the settings that changed. */
  settings?: RoomSettings;
  reason?: string;
}

export interface Kicked {
  type: 'kicked';
  room: string;
  reason?: string;
}

export interface Left {
  type: 'left';
  ref?: string;
  room: string;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** What the gateway agreed in the handshake (permessage-deflate ...). */
  extensions: string;
  /** The close code that ended the last socket, when there was one. */
  code?: number | null;
  reason?: string;
  /** When the next attempt starts (ms since the epoch), while reconnecting. */
  retryAt?: number;
  attempt?: number;
}

export interface Repaired {
  room: string;
  /** The seq range [from, to] that was missing and has been filled from history. */
  from: number;
  to: number;
  fetched: number;
}

export interface EventMap {
  state: StateChange;
  welcome: Welcome;
  joined: Joined;
  message: Message;
  member: Member;
  typing: Typing;
  presence: Presence;
  moderation: Moderation;
  kicked: Kicked;
  left: Left;
  repaired: Repaired;
  /** An `error` frame that answers no request of this client (e.g. `rate_limited` without ref). */
  error: WarrenError;
}

export type ErrorCode =
  | 'bad_request'
  | 'unknown_type'
  | 'too_large'
  | 'forbidden'
  | 'not_joined'
  | 'no_such_room'
  | 'muted'
  | 'banned'
  | 'rate_limited'
  | 'unavailable'
  | 'internal'
  /** The link dropped before the answer, and the request is not repeated on its own. */
  | 'disconnected'
  /** The client was closed (by the application, or for good by the server). */
  | 'closed';

export declare class WarrenError extends Error {
  constructor(code: string, message?: string, frame?: object);
  readonly code: ErrorCode | string;
  readonly ref?: string;
  readonly frame?: { type: 'error'; code: string; message?: string; ref?: string };
}

export interface BackoffOptions {
  /** The first ceiling, doubled per failed attempt (default 500 ms). */
  baseMs: number;
  /** The largest ceiling (default 10 s). */
  capMs: number;
}

/** A uniformly random wait in [0, min(capMs, baseMs * 2^attempt)). */
export declare function backoffDelay(attempt: number, options: BackoffOptions, random?: () => number): number;

export interface WebSocketLike {
  readonly readyState: number;
  readonly extensions?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export interface ClientOptions {
  /** The `/ws` URL (the token goes in `?token=`), or a function that builds the URL for a token. */
  url: string | ((token: string | undefined) => string | Promise<string>);
  /** The JWT, or a function asked for one before every connection attempt. */
  token?: string | (() => string | Promise<string>);
  /** Defaults to globalThis.WebSocket (Node 20: run with --experimental-websocket). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  backoff?: Partial<BackoffOptions>;
  /** A socket that sends no `welcome` within this is dropped (default 10 s). */
  welcomeTimeoutMs?: number;
  /** Heartbeat: a `ping` this often (default 20 s); no frame within the grace drops the link. */
  pingEveryMs?: number;
  pingGraceMs?: number;
  /** Asked after a handshake that failed; a reason (e.g. "token refused") closes for good. */
  diagnose?: () => Promise<string | null>;
}

export interface ModerateOptions {
  user?: string;
  msgId?: string;
  role?: 'moderator' | 'member';
  durationS?: number;
  /** For `configure` (owners and admins): the settings to change. */
  settings?: RoomSettings;
  reason?: string;
}

export declare class WarrenClient {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  readonly user: User | null;
  readonly session: string | null;
  readonly gateway: string | null;
  readonly limits: Limits | null;
  readonly extensions: string;
  /** Connections that reached `welcome` after the first. */
  readonly reconnects: number;

  on<K extends keyof EventMap>(type: K, listener: (detail: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(type: K, listener: (detail: EventMap[K]) => void): void;

  connect(): void;
  close(reason?: string): void;
  reconnect(): void;
  retryNow(): void;

  join(room: string): Promise<Joined>;
  leave(room: string): Promise<Left>;
  send(room: string, text: string, options?: { ref?: string }): Promise<Ack>;
  dm(to: string, text: string, options?: { ref?: string }): Promise<Ack>;
  history(room: string, options?: { before?: number; limit?: number }): Promise<History>;
  presence(room: string): Promise<User[]>;
  typing(room: string): boolean;
  moderate(room: string, action: ModerationAction, options?: ModerateOptions): Promise<Ack>;
  room(room: string): { epoch: string | null; seq: number; joined: boolean } | null;
}
