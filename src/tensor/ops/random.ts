// Filled in by the random op family.
export {};
