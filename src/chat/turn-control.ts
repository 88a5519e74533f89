/** What the REST side of the server may ask of running turns (interrupt, delete); the chat core implements it. */
export interface TurnControl {
  /** Stops the running turn of a conversation, wherever it runs. @returns whether one was running or waiting here */
  stop(chatId: string): Promise<boolean>;
  isRunning(chatId: string): boolean;
}
