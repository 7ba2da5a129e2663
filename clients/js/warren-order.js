// One room's delivery order for warren.js: each message once, in `seq` order, within
// one `epoch`. Pure: it decides what to deliver and which range is missing, and the
// client does the I/O (the `history` request that fills a gap), so the rules can be
// tested without a network.

/** The most messages one `history` request asks for (the server's own limit). */
export const HISTORY_PAGE = 100;

export class RoomOrder {
  /** The epoch of what was delivered; null before the first `joined`. */
  epoch = null;
  /** The highest seq delivered (or known complete): the `since` of the next rejoin. */
  seq = 0;
  /** A `joined` answered on the current connection. */
  joined = false;
  /** What was delivered is void (a message came from a new epoch): the next `joined` says so. */
  #voided = false;
  /** seq -> message, received ahead of `seq + 1`. */
  #ahead = new Map();
  /** A `history` request for a gap is on its way. */
  repairing = false;

  /**
   * A `joined` answer. Returns whether it answers a rejoin, whether what the application
   * holds is void (`reset`: new epoch, or not everything since `since` could be given),
   * and the messages to deliver now.
   */
  applyJoined(frame) {
    const rejoin = this.epoch !== null;
    const reset = this.#voided || (rejoin && (!frame.recovered || frame.epoch !== this.epoch));
    if (reset || !rejoin) {
      this.seq = 0;
      this.#ahead = new Map([...this.#ahead].filter(([, m]) => m.epoch === frame.epoch));
    }
    this.#voided = false;
    this.epoch = frame.epoch;
    this.joined = true;
    // `history` holds everything between `since` and `seq` (or the latest messages
    // after a reset): that range is complete, deleted messages and all.
    const deliver = [];
    for (const m of [...frame.history].sort((x, y) => x.seq - y.seq)) {
      if (m.seq <= this.seq) continue;
      this.seq = m.seq;
      deliver.push(m);
    }
    this.seq = Math.max(this.seq, frame.seq);
    deliver.push(...this.#drain());
    return { rejoin, reset, deliver };
  }

  /**
   * A live message. Returns the messages to deliver now, and `restart`: the room's
   * history restarted (a new epoch), so it must be joined again from scratch.
   */
  message(m) {
    if (!this.joined) {
      // Before `joined` answers: kept, and ordered against its history.
      this.#ahead.set(m.seq, m);
      return { deliver: [], restart: false };
    }
    if (m.epoch !== this.epoch) {
      this.epoch = null;
      this.seq = 0;
      this.joined = false;
      this.#voided = true;
      this.#ahead = new Map([[m.seq, m]]);
      return { deliver: [], restart: true };
    }
    if (m.seq <= this.seq) return { deliver: [], restart: false }; // seen already
    this.#ahead.set(m.seq, m);
    return { deliver: this.#drain(), restart: false };
  }

  /** The link dropped: until the rejoin answers, messages wait. */
  disconnected() {
    this.joined = false;
  }

  /**
   * The missing range to fetch, as `history` arguments ({before, limit}, at most a page),
   * or null when nothing is missing or a request is already on its way.
   */
  gap() {
    if (this.repairing || !this.joined || this.#ahead.size === 0) return null;
    const first = Math.min(...this.#ahead.keys());
    const before = Math.min(first, this.seq + 1 + HISTORY_PAGE);
    return { epoch: this.epoch, from: this.seq + 1, before, limit: before - this.seq - 1 };
  }

  /**
   * The `history` answer for `gap`. Everything before `gap.before` is known now: what
   * history does not hold was deleted. Returns the messages to deliver now.
   */
  filled(gap, messages) {
    if (gap.epoch !== this.epoch) return [];
    for (const m of messages) if (m.seq > this.seq) this.#ahead.set(m.seq, m);
    const deliver = [];
    while (this.seq < gap.before - 1) {
      const m = this.#ahead.get(this.seq + 1);
      if (m) {
        this.#ahead.delete(m.seq);
        deliver.push(m);
      }
      this.seq += 1;
    }
    deliver.push(...this.#drain());
    return deliver;
  }

  /** The held messages that follow on from `seq`, in order; stale ones are dropped. */
  #drain() {
    const deliver = [];
    for (;;) {
      const next = this.#ahead.get(this.seq + 1);
      if (next) {
        this.#ahead.delete(next.seq);
        this.seq = next.seq;
        deliver.push(next);
        continue;
      }
      const stale = [...this.#ahead.keys()].filter((seq) => seq <= this.seq);
      if (stale.length === 0) return deliver;
      stale.forEach((seq) => this.#ahead.delete(seq));
    }
  }
}
