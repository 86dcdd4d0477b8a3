// Filled in by the cast op family.
export {};
