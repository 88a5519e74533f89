import type { Config } from '../config/config.ts';

/** Sensitive-word review of questions and answers (configurable word lists and replies). */
export class Moderation {
  private readonly input: string[];
  private readonly output: string[];

  constructor(private readonly config: Config['moderation']) {
    this.input = config.input_words.map((w) => w.toLowerCase()).filter(Boolean);
    this.output = config.output_words.map((w) => w.toLowerCase()).filter(Boolean);
  }

  /** @returns the configured reply when the question is blocked, else null */
  checkInput(text: string): string | null {
    return hit(this.input, text) ? this.config.input_reply : null;
  }

  /** @returns the configured replacement when the answer is blocked, else null */
  checkOutput(text: string): string | null {
    return hit(this.output, text) ? this.config.output_reply : null;
  }
}

function hit(words: string[], text: string): boolean {
  if (words.length === 0) return false;
  const lower = text.toLowerCase();
  return words.some((w) => lower.includes(w));
}
