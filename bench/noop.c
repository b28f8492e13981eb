/* A no-op dynamically linked program: what start-up costs are measured on. */
int main(void) { return 0; }
