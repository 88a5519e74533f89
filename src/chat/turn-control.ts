/**
 * What the rest of the server may ask of running turns. The chat core implements it; until a
 * runtime is running turns, no conversation has one.
 */
export interface TurnControl {
  /** Stops the running turn of a conversation, wherever it runs. @returns whether one was running */
  stop(chatId: string): Promise<boolean>;
  isRunning(chatId: string): boolean;
}

export class IdleTurnControl implements TurnControl {
  async stop(): Promise<boolean> {
    return false;
  }
  isRunning(): boolean {
    return false;
  }
}
