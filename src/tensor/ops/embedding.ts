// Filled in by the embedding op family.
export {};
