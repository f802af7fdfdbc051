/** `action` wrapped so that only its first call does anything: a release a caller may repeat. */
export function once(action: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    action();
  };
}
