// Filled in by the optim op family.
export {};
